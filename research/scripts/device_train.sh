#!/usr/bin/env bash
# The prepared GPU training run (issue 25), in the device tool's two calls; see
# research/scripts/device_train.py and docs/training.md, "The prepared GPU run".
#   here:    .venv/bin/python research/scripts/device_train.py pack
#   call 1:  carry [".device/a"]   bash research/scripts/device_train.sh stage
#   call 2:  carry [".device/b"]   bash research/scripts/device_train.sh run [--minutes 6] [--set k=v]...
#   then, while the machine is warm and >= 5 device-minutes are left, nothing carried:
#            bash research/scripts/device_train.sh run --minutes 9.5   # the same run, 3.5 more minutes
# continuing an earlier run (here: device_train.py pack-init <its returned files>):
#   call 2:  carry [".device/b"]   bash research/scripts/device_train.sh stage
#   call 3:  carry [".device/c"]   bash research/scripts/device_train.sh run --init [--minutes 6]
#   here:    bash research/scripts/device_train.sh local      # the identical path on the CPU, 2 minutes
#   here:    bash research/scripts/device_train.sh rehearse   # run, warm resume and continuation
#                                                             # under the image's packages
#   here:    .venv/bin/python research/scripts/device_train.py unpack <files_at> --to <checkpoint dir>
# On the device the image's own python3 and packages apply (torch 2.11, transformers 5.17);
# only the wheels in .device/a/wheels are added, into /tmp/extok-site.
set -euo pipefail
cd "$(dirname "$0")/../.."
cmd=${1:-run}
shift || true
config=${EXTOK_DEVICE_CONFIG:-research/configs/v3/gpu.json}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
case "$cmd" in
  stage)  # a part stays on the warm machine as an ignored path until the run's call
    du -sh .device/*
    nvidia-smi -L
    python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())'
    # the versions `rehearse` ran the code under, against the image's own: a difference is
    # a version the code never ran under (the run still goes ahead)
    python3 - <<'PY' || true
from importlib.metadata import PackageNotFoundError, version
pins = [l.split("#")[0].strip() for l in open("research/scripts/device_image.txt")]
for name, want in (p.split("==") for p in pins if "==" in p):
    try:
        got = version(name)
    except PackageNotFoundError:
        got = "missing"
    if got.split("+")[0] != want:
        print(f"not rehearsed: {name} {got} here, {want} in research/scripts/device_image.txt")
PY
    ;;
  run)    # call 2
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/extok-site .device/a/wheels/*.whl
    export PYTHONPATH="/tmp/extok-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader || true
    python3 research/scripts/device_train.py run --config "$config" "$@"
    ;;
  local)  # here: the same path on the CPU at a tiny batch
    py=${EXTOK_PYTHON:-.venv/bin/python}
    "$py" research/scripts/device_train.py run --local --work /tmp/extok-device-local \
      --out "${OUT:-/tmp/extok-device-local/out}" --config "$config" --minutes 2 "$@"
    ;;
  rehearse)  # here: run and continuation on the CPU under the device image's packages
    # (research/scripts/device_image.txt: transformers 5.17 there, not this project's pin);
    # run it before a GPU session's calls, after any change to what the run imports
    [ -f .device/a/manifest.json ] && [ -f .device/b/manifest.json ] ||
      { echo "rehearse: no .device/a and .device/b: run device_train.py pack first" >&2; exit 2; }
    venv=${EXTOK_DEVICE_VENV:-$HOME/.cache/extok-rag/device-image/venv}
    if [ ! -f "$venv/.complete" ]; then
      py312=
      for c in ${PYTHON312:-} python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
        "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { py312=$c; break; }
      done
      [ -n "$py312" ] || { echo "rehearse: no python3.12 here (set PYTHON312)" >&2; exit 2; }
      rm -rf "$venv" && "$py312" -m venv "$venv"
      "$venv/bin/python" -m pip install -q -r research/scripts/device_image.txt .device/a/wheels/*.whl
      touch "$venv/.complete"
    fi
    tmp=$(mktemp -d /tmp/extok-rehearse.XXXXXX)
    trap 'rm -rf "$tmp"' EXIT
    mkdir "$tmp/parts" && ln -s "$PWD/.device/a" "$tmp/parts/a" && ln -s "$PWD/.device/b" "$tmp/parts/b"
    there=("$venv/bin/python" research/scripts/device_train.py run --local --parts "$tmp/parts"
           --config "$config" --checkpoint-minutes 10)
    here=(.venv/bin/python research/scripts/device_train.py)
    "${here[@]}" fits  # each part with today's working tree still fits one call
    "${there[@]}" --work "$tmp/work" --out "$tmp/out" --minutes 1 "$@"
    "${here[@]}" verify "$tmp/out"
    cp "$tmp/out/summary.json" "$tmp/first.json"
    # a later call on the still-warm machine resumes the same run with a larger budget
    "${there[@]}" --work "$tmp/work" --out "$tmp/out" --minutes 1.4 "$@"
    "${here[@]}" verify "$tmp/out"
    "${here[0]}" - "$tmp/first.json" "$tmp/out/summary.json" <<'PY'
import json, sys
first, later = (json.load(open(p)) for p in sys.argv[1:])
a, b = first["train"]["last_step"], later["train"]["last_step"]
assert b > a, f"the later call did not continue the run (step {a} -> {b})"
assert later["phases"] == first["phases"], f"phases changed: {first['phases']} -> {later['phases']}"
print(f"resumed on the warm machine: step {a} -> {b}, the phases as trained kept")
PY
    "${here[@]}" pack-init "$tmp/out" --out "$tmp/parts" >/dev/null
    "${there[@]}" --init --work "$tmp/work2" --out "$tmp/out2" --minutes 0.5 "$@"
    "${here[@]}" verify "$tmp/out2"
    ;;
  *) echo "usage: $0 stage|run|local|rehearse [run options]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The v3 capacity study (issue 25, item 1; docs/training.md, "v3"): each variant in
# research/configs/v3/study/ layered on base.json (the GPU recipe at CPU scale: 8 full-weight layers,
# mean pooling, k from {1, 2, 4, 8}, the five-objective mixture with expand), trained for the
# same CPU-minutes (`budget_clock cpu`, probes excluded), then (d) ×4 at 2K on 8 windows.
# Resumable: rerun the same command. Summary: .venv/bin/python benchmarks/study_v3.py
#   bash research/scripts/study_v3.sh VARIANT [VARIANT ...]     (STUDY_THREADS, default 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
home=${EXTOK_RAG_HOME:-$HOME/.cache/extok-rag}
for v in "$@"; do
  run="$home/runs/v3s-$v"
  .venv/bin/extok-rag train --config research/configs/v3/study/base.json --config "research/configs/v3/study/$v.json" \
    --name "v3s-$v" --threads "${STUDY_THREADS:-2}" --export "$run/export"
  [ -f "$run/lm-2k.json" ] || OMP_NUM_THREADS=${STUDY_THREADS:-2} .venv/bin/extok-rag eval lm \
    --lengths 2048 --ks 4 --windows 8 --chunk-len 256 --no-untrained --states float16 \
    --tokenizer "$run/export" --out "$run/lm-2k.json"
done

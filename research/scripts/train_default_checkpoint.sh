#!/usr/bin/env bash
# Reproduces the shipped extensible tokenizer (extok_rag/checkpoints/smollm2-135m) from a clean
# checkout: the training data, then the run in the three parts it was trained in (the same
# learning-rate schedule and data order; the trainer resumes exactly, so the parts can also be
# interrupted and rerun). About 1.6 h of training on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/extok-rag ] || bash scripts/install.sh
extok=.venv/bin/extok-rag
run=(--config research/configs/study/base.json --config research/configs/study/r1-regr-l2-ar64.json
     --name default-smollm2 --set probe_every=100)
"$extok" data prepare
"$extok" train "${run[@]}" --max-steps 2000 --stop-at 420        # constant lr (base.json)
"$extok" train "${run[@]}" --max-steps 1400 --set schedule=linear --stop-at 615
"$extok" train "${run[@]}" --max-steps 1000 --set schedule=linear \
    --export extok_rag/checkpoints/smollm2-135m

#!/usr/bin/env bash
# The v2 long run (issue 11): the study's chosen recipe (research/configs/study-v2/base.json +
# s6-qa-span-more-updates.json: from the shipped v1, 8 examples per step, lr 1e-3 LoRA / 2e-3
# adapter) with research/configs/v2/long-run.json: qa 0.5 + span 0.3 in the ask frame + ar 0.2 (s6 alone
# regressed the AR probe: k2 11.53 -> 12.88 on the same 6 sequences), probes, checkpoints.
# Resumes exactly from <home>/runs/v2-long/checkpoint: rerun the same command each session.
# Give it the machine (2 threads), or pass --threads 1 while doing light work beside it.
#   bash research/scripts/train_v2_long.sh [--threads N] [--stop-at STEP]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f "${EXTOK_RAG_HOME:-$HOME/.cache/extok-rag}/training-data/qa_train.jsonl" ] ||
  .venv/bin/extok-rag data prepare
exec .venv/bin/extok-rag train --config research/configs/study-v2/base.json \
  --config research/configs/study-v2/s6-qa-span-more-updates.json --config research/configs/v2/long-run.json \
  --name v2-long "$@"

#!/usr/bin/env bash
# The selection probe of issue 11 (docs/training.md, "Mean pooling end to end"): `eval qa` on a
# SQuAD dev draw that no evaluation uses (seed 97, 300 questions), compressed x4 top-4 from a
# float16 index, one torch thread (PROBE_THREADS; about 15 minutes for the x4 row and its index on
# this 2-core machine beside a 1-thread training run; resumes a killed run).
# SQuAD paragraphs are never training data, so any SQuAD draw is clean. It picks recipes; the
# ship decision stays with the full `eval qa` on seed 0.
#   bash research/scripts/selection_probe.sh NAME CHECKPOINT [ROWS]
# ROWS defaults to none,raw,compressed (run it so once for the reference checkpoint, v1; raw top-4
# is the slow row, 26.3% on this draw); `compressed` alone for a candidate.
# Output: <home>/probe-squad97/NAME.json, paired with
#   .venv/bin/python benchmarks/paired_runs.py --labels v1 NAME \
#     --qa <home>/probe-squad97/v1.json <home>/probe-squad97/NAME.json --no-write
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:?usage: selection_probe.sh NAME CHECKPOINT [ROWS]}
ckpt=${2:?usage: selection_probe.sh NAME CHECKPOINT [ROWS]}
rows=${3:-none,raw,compressed}
home=${EXTOK_RAG_HOME:-$HOME/.cache/extok-rag}
out=$home/probe-squad97
mkdir -p "$out"
OMP_NUM_THREADS=${PROBE_THREADS:-1} HF_HUB_OFFLINE=1 .venv/bin/extok-rag eval qa --sets squad --seed 97 \
  --questions 300 --ks 4 --budget-ks '' --expand-budgets '' --latency-questions 0 \
  --rows "$rows" --states float16 --tokenizer "$ckpt" --work-dir "$out/work-$name" \
  --out "$out/$name.json"

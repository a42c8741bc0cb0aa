#!/usr/bin/env bash
# The ship check of issues 11 and 25 (docs/training.md, "The ship check, and a learned window
# merge" and "v3"): the full `eval qa` (SQuAD + HotpotQA, 300 questions each, seed 0, top-4,
# float16 index; the candidate also with expand and spans-only at 0.25 and 0.35 of raw's
# positions, BUDGETS='' to skip them) and
# `eval lm` ×4 at 2K/4K/8K (8 windows), for the shipped checkpoint (v1) and a candidate, on the
# same questions and windows. About 110 minutes on this 2-core machine with two threads and no
# other job (v1's qa rows 51 min, the candidate's 31, each lm 11-13; on session 37's AMD EPYC
# v1's qa rows took 57 min and its lm 13.5); each step resumes a killed run.
#   bash research/scripts/ship_check.sh NAME CHECKPOINT
#   bash research/scripts/ship_check.sh --baseline    # v1's rows only, ahead of a candidate
# Output: <home>/ship-check/{qa,lm}-{v1,NAME}.json, paired with
#   .venv/bin/python benchmarks/paired_runs.py --labels v1 NAME --rows extok,hybrid \
#     --qa <home>/ship-check/qa-v1.json <home>/ship-check/qa-NAME.json \
#     --lm <home>/ship-check/lm-v1.json <home>/ship-check/lm-NAME.json --no-write
set -euo pipefail
cd "$(dirname "$0")/../.."
usage="usage: ship_check.sh NAME CHECKPOINT | ship_check.sh --baseline"
name=${1:?$usage}
[ "$name" = --baseline ] || ckpt=${2:?$usage}
home=${EXTOK_RAG_HOME:-$HOME/.cache/extok-rag}
out=$home/ship-check
mkdir -p "$out"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${CHECK_THREADS:-2}

qa() {  # NAME ROWS [CHECKPOINT]; no checkpoint: the shipped one
  .venv/bin/extok-rag eval qa --sets squad,hotpotqa --questions 300 --ks 2,4 --budget-ks '' \
    --expand-budgets "${BUDGETS-0.25,0.35}" --latency-questions 0 --batch-size 16 --rows "$2" \
    --states float16 \
    ${3:+--tokenizer "$3"} --work-dir "$out/work-$1" --out "$out/qa-$1.json"
}

lm() {  # NAME [CHECKPOINT]
  .venv/bin/extok-rag eval lm --lengths 2048,4096,8192 --ks 4 --windows 8 --chunk-len 256 \
    --no-untrained --states float16 ${2:+--tokenizer "$2"} --out "$out/lm-$1.json"
}

[ -f "$out/qa-v1.json" ] || qa v1 none,raw,compressed,hybrid
[ -f "$out/lm-v1.json" ] || lm v1
[ "$name" = --baseline ] && exit 0
qa "$name" compressed,hybrid,expand,spans "$ckpt"  # spans: the tokenizer-free control
lm "$name" "$ckpt"

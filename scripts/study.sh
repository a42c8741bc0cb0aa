#!/usr/bin/env bash
# The training study (docs/training.md): each variant in configs/study/ layered on base.json,
# trained for the base's wall-clock budget, one after another. Resumable: rerun to continue.
#   bash scripts/study.sh [VARIANT ...]     (default: every configs/study/r*.json)
set -euo pipefail
cd "$(dirname "$0")/.."
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=($(ls configs/study/r*.json | xargs -n1 basename | sed 's/.json$//'))
for v in "${variants[@]}"; do
  .venv/bin/extok-rag train --config configs/study/base.json --config "configs/study/$v.json" \
    --name "study-$v" ${STUDY_THREADS:+--threads $STUDY_THREADS}
done

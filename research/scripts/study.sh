#!/usr/bin/env bash
# The training study (docs/training.md): each variant in research/configs/study/ layered on base.json,
# trained for the base's wall-clock budget, one after another. Resumable: rerun to continue.
#   bash research/scripts/study.sh [VARIANT ...]     (default: every research/configs/study/r*.json)
set -euo pipefail
cd "$(dirname "$0")/../.."
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=($(ls research/configs/study/r*.json | xargs -n1 basename | sed 's/.json$//'))
for v in "${variants[@]}"; do
  .venv/bin/extok-rag train --config research/configs/study/base.json --config "research/configs/study/$v.json" \
    --name "study-$v" ${STUDY_THREADS:+--threads $STUDY_THREADS}
done

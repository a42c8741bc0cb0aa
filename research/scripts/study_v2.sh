#!/usr/bin/env bash
# The v2 objective study (docs/training.md, "Study v2"): each variant in research/configs/study-v2/
# layered on base.json, trained for the base's training minutes (probes excluded) with one
# torch thread, so two variants can share this 2-core machine fairly. Resumable: rerun.
#   bash research/scripts/study_v2.sh VARIANT [VARIANT ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
for v in "$@"; do
  .venv/bin/extok-rag train --config research/configs/study-v2/base.json --config "research/configs/study-v2/$v.json" \
    --name "v2-$v" --threads "${STUDY_THREADS:-1}"
done

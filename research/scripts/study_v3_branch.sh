#!/usr/bin/env bash
# Continue a v3 study run under a new variant name (a longer budget, another mixture phase):
# copies the run's directory (checkpoint, log), drops what belongs to its old end (export,
# lm-2k.json), then trains research/configs/v3/study/NEW.json from that checkpoint with
# study_v3.sh. The new config must keep the old one's batches (seed, sizes) to stay paired.
# Rerunning resumes NEW; FROM is never written.
#   bash research/scripts/study_v3_branch.sh FROM NEW
set -euo pipefail
cd "$(dirname "$0")/../.."
home=${EXTOK_RAG_HOME:-$HOME/.cache/extok-rag}
from="$home/runs/v3s-$1" new="$home/runs/v3s-$2"
[ -f "research/configs/v3/study/$2.json" ] || { echo "error: no config research/configs/v3/study/$2.json" >&2; exit 1; }
if [ ! -d "$new" ]; then
  [ -f "$from/checkpoint/trainer_state.json" ] || { echo "error: no checkpoint in $from" >&2; exit 1; }
  rm -rf "$new.partial"  # left by a copy that was cut short
  cp -a "$from" "$new.partial"
  rm -rf "$new.partial/export" "$new.partial/lm-2k.json"
  mv "$new.partial" "$new"
fi
bash research/scripts/study_v3.sh "$2"

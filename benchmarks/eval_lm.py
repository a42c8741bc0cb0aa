"""Language-modelling benchmark: the paper's Table 1 protocol on the held-out books.

    .venv/bin/python benchmarks/eval_lm.py [eval lm options]

Runs `extok-rag eval lm --write-docs [options]` and so writes the `eval-lm` section of
docs/benchmarks.md. The full default protocol (5 lengths up to 32K, 40 windows, k in
{2..32}) takes hours on a CPU; for a quick check:

    .venv/bin/python benchmarks/eval_lm.py --lengths 2048,4096 --windows 12 \
        --out runs/eval-lm.json [--tokenizer CHECKPOINT]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from extok_rag.cli.eval_cmd import eval_app

if __name__ == "__main__":
    eval_app(["lm", "--write-docs", *sys.argv[1:]])

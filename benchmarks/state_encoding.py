"""int8 against float16 states: the same `eval qa` rows and Table-1 (d) windows, paired.

    E=".venv/bin/extok-rag"; Q="eval qa --ks 4 --budget-ks '' --rows compressed"
    $E $Q --states float16 --out f16.json; $E $Q --states int8 --out int8.json
    L="eval lm --lengths 2048,8192 --ks 2,4 --windows 8 --chunk-len 256 --no-untrained"
    $E $L --states float16 --out lm-f16.json; $E $L --states int8 --out lm-int8.json
    .venv/bin/python benchmarks/state_encoding.py --qa f16.json int8.json \
        --lm lm-f16.json lm-int8.json

QA: for every set and compressed row in both files (same questions, checked by question id),
accuracy with each encoding, the questions right with only one of them, and how many answers
are the same string. LM: for every (d) row (key `extok@k`) and length, perplexity with each
encoding, the relative change, and on how many windows int8's NLL is the higher. Writes
section `state-encoding` of docs/benchmarks.md (`--no-write`: print only).
"""

from __future__ import annotations

from paired_runs import main

INTRO = (
    "`benchmarks/state_encoding.py`: the same questions and windows read from a float16 "
    "and an int8 index (`index --states`, `eval qa --states`, `eval lm --states`). "
    "Paired: right only with float16 / only with int8; windows where int8's NLL is higher."
)

if __name__ == "__main__":
    main("state-encoding", ("float16", "int8"), INTRO, "int8 against float16 states")

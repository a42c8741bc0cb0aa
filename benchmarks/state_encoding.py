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

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section


def qa_rows(f16: dict, int8: dict) -> list[str]:
    """One table row per (set, compressed condition) present in both runs."""
    lines = []
    other_sets = {s["name"]: s for s in int8["sets"]}
    for a in f16["sets"]:
        b = other_sets.get(a["name"])
        if b is None:
            continue
        if a["qids"] != b["qids"]:
            raise SystemExit(f"{a['name']}: the two runs asked different questions")
        for name, x in a["per_question"].items():
            y = b["per_question"].get(name)
            if y is None or not name.startswith("extok"):
                continue
            n = len(x["correct"])
            only_f16 = sum(p and not q for p, q in zip(x["correct"], y["correct"], strict=True))
            only_int8 = sum(q and not p for p, q in zip(x["correct"], y["correct"], strict=True))
            same = sum(p == q for p, q in zip(x["answers"], y["answers"], strict=True))
            lines.append(
                f"| {a['name']} | {name} | {n} | {100 * sum(x['correct']) / n:.1f}% | "
                f"{100 * sum(y['correct']) / n:.1f}% | {only_f16} / {only_int8} | {same} / {n} |"
            )
    return lines


def lm_rows(f16: dict, int8: dict) -> list[str]:
    """One table row per (length, extok@k) present in both runs."""
    if f16["windows"] != int8["windows"]:
        raise SystemExit("eval lm: the two runs read different windows")
    lines = []
    for length, cells in f16["results"].items():
        for key, a in cells.items():
            b = int8["results"].get(length, {}).get(key)
            if b is None or not key.startswith("extok") or a["ppl"] is None:
                continue
            higher = sum(y > x for x, y in zip(a["window_nll"], b["window_nll"], strict=True))
            change = 100 * (b["ppl"] / a["ppl"] - 1)
            lines.append(
                f"| {int(length):,} | {key} | {len(a['window_nll'])} | {a['ppl']:.3f} | "
                f"{b['ppl']:.3f} | {change:+.3f}% | {higher} / {len(a['window_nll'])} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--qa",
        nargs=2,
        type=Path,
        action="append",
        default=[],
        metavar=("FLOAT16_JSON", "INT8_JSON"),
    )
    parser.add_argument("--lm", nargs=2, type=Path, metavar=("FLOAT16_JSON", "INT8_JSON"))
    parser.add_argument("--no-write", action="store_true", help="Print only.")
    args = parser.parse_args()
    load = lambda path: json.loads(path.read_text())  # noqa: E731
    qa = [line for a, b in args.qa for line in qa_rows(load(a), load(b))]
    lm = lm_rows(load(args.lm[0]), load(args.lm[1])) if args.lm else []
    body = [
        "## int8 against float16 states",
        "",
        "`benchmarks/state_encoding.py`: the same questions and windows read from a float16 "
        "and an int8 index (`index --states`, `eval qa --states`, `eval lm --states`). "
        "Paired: right only with float16 / only with int8; windows where int8's NLL is higher.",
    ]
    if qa:
        body += [
            "",
            "| set | row | questions | float16 | int8 | right only f16 / only int8 | same answer |",
            "|---|---|---:|---:|---:|---:|---:|",
            *qa,
        ]
    if lm:
        body += [
            "",
            "| T | row | windows | ppl float16 | ppl int8 | change | int8 NLL higher |",
            "|---:|---|---:|---:|---:|---:|---:|",
            *lm,
        ]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section("state-encoding", text)


if __name__ == "__main__":
    main()

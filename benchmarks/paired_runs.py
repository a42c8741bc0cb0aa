"""Two runs of the same evaluation, paired: `eval qa` rows on the same questions, `eval lm`
rows on the same windows, run A against run B (two checkpoints, two state encodings, ...).

    .venv/bin/python benchmarks/paired_runs.py --labels v1 v2 --section qa-v2-vs-v1 \
        --qa V1_QA.json V2_QA.json [--qa ...] [--lm V1_LM.json V2_LM.json] [--title TEXT]

QA: for every set and row in both files whose name starts with one of `--rows` (default
`extok`), accuracy of each run, the questions right with only one of them, an exact two-sided
sign test on those, and how many answers are the same string; plus, where run A has them, the
`none` and `raw` rows of the set. LM: for every (d) row (key `extok@k`) and length,
perplexity of each run, the relative change, and on how many windows B's NLL is the higher.
Writes section `--section` of docs/benchmarks.md (`--no-write`: print only).
"""

from __future__ import annotations

import argparse
import json
import sys
from math import comb
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial p of `wins` against `losses` (ties left out)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(a: list[bool], b: list[bool]) -> tuple[int, int, float]:
    """(right only with a, right only with b, sign-test p) on the same questions."""
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    return only_a, only_b, sign_test(only_a, only_b)


def paired_cell(a: list[bool], b: list[bool]) -> str:
    """Questions right only with a / only with b (sign-test p), as a table cell."""
    return pair_cell(*paired(a, b))


def pair_cell(only_a: int, only_b: int, p: float) -> str:
    """`paired`'s result as a table cell: "only a / only b (p)"."""
    p_text = f"p {p:.3f}" if p >= 0.001 else "p < 0.001"
    return f"{only_a} / {only_b} ({p_text})"


def accuracy(row: dict) -> str:
    return f"{100 * sum(row['correct']) / len(row['correct']):.1f}%"


def qa_pairs(a: dict, b: dict, prefixes: tuple[str, ...] = ("extok",)):
    """(set, row name, a's row, b's row) for each condition present in both runs."""
    other_sets = {s["name"]: s for s in b["sets"]}
    for x_set in a["sets"]:
        y_set = other_sets.get(x_set["name"])
        if y_set is None:
            continue
        if x_set["qids"] != y_set["qids"]:
            raise SystemExit(f"{x_set['name']}: the two runs asked different questions")
        for name, x in x_set["per_question"].items():
            y = y_set["per_question"].get(name)
            if y is not None and name.startswith(prefixes):
                yield x_set, name, x, y


def qa_rows(a: dict, b: dict, prefixes: tuple[str, ...] = ("extok",)) -> list[str]:
    """One table row per (set, condition) present in both runs."""
    lines = []
    for x_set, name, x, y in qa_pairs(a, b, prefixes):
        rows = x_set["per_question"]
        context = " / ".join(accuracy(rows[n]) if n in rows else "—" for n in ("none", "raw top-4"))
        only_a, only_b, p = paired(x["correct"], y["correct"])
        same = sum(u == v for u, v in zip(x["answers"], y["answers"], strict=True))
        n = len(x["correct"])
        lines.append(
            f"| {x_set['name']} | {name} | {n} | {context} | {accuracy(x)} | "
            f"{accuracy(y)} | {only_a} / {only_b} | {p:.3f} | {same} / {n} |"
        )
    return lines


def pooled_line(pairs: list[tuple[str, str, dict, dict]], labels: tuple[str, str]) -> str:
    """The rows' questions pooled: right only with a / only with b over every row paired."""
    a = [r for _, _, x, _ in pairs for r in x["correct"]]
    b = [r for _, _, _, y in pairs for r in y["correct"]]
    return (
        f"Pooled over every row above, right only {labels[0]} / only {labels[1]}: "
        f"**{paired_cell(a, b)}**."
    )


def lm_rows(a: dict, b: dict) -> list[str]:
    """One table row per (length, extok@k) present in both runs."""
    if a["windows"] != b["windows"]:
        raise SystemExit("eval lm: the two runs read different windows")
    lines = []
    for length, cells in a["results"].items():
        for key, x in cells.items():
            y = b["results"].get(length, {}).get(key)
            if y is None or not key.startswith("extok") or x["ppl"] is None:
                continue
            higher = sum(q > p for p, q in zip(x["window_nll"], y["window_nll"], strict=True))
            change = 100 * (y["ppl"] / x["ppl"] - 1)
            lines.append(
                f"| {int(length):,} | {key} | {len(x['window_nll'])} | {x['ppl']:.3f} | "
                f"{y['ppl']:.3f} | {change:+.3f}% | {higher} / {len(x['window_nll'])} |"
            )
    return lines


def paired_body(
    title: str, intro: str, labels: tuple[str, str], qa: list, lm: list, pooled: str = ""
) -> str:
    a, b = labels
    body = [f"## {title}", "", intro]
    if qa:
        body += [
            "",
            f"| set | row | questions | none / raw (run {a}) | {a} | {b} | right only {a} / "
            f"only {b} | sign test p | same answer |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *qa,
        ]
    if pooled:
        body += ["", pooled]
    if lm:
        body += [
            "",
            f"| T | row | windows | ppl {a} | ppl {b} | change | {b}'s NLL higher |",
            "|---:|---|---:|---:|---:|---:|---:|",
            *lm,
        ]
    return "\n".join(body)


def main(
    section: str | None = None,
    labels: tuple[str, str] | None = None,
    intro: str = "",
    title: str | None = None,
) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qa", nargs=2, type=Path, action="append", default=[])
    parser.add_argument("--lm", nargs=2, type=Path)
    parser.add_argument("--labels", nargs=2, default=labels or ("A", "B"))
    parser.add_argument("--section", default=section, help="docs/benchmarks.md section")
    parser.add_argument("--title", help="The section's heading (default: LABEL_A against B).")
    parser.add_argument("--rows", default="extok", help="Row-name prefixes, comma-separated.")
    parser.add_argument(
        "--pooled", action="store_true", help="Add the qa rows' questions pooled, paired."
    )
    parser.add_argument("--no-write", action="store_true", help="Print only.")
    args = parser.parse_args()
    if not (args.section or args.no_write):
        parser.error("--section is needed unless --no-write")
    load = lambda path: json.loads(path.read_text())  # noqa: E731
    prefixes = tuple(args.rows.split(","))
    runs = [(load(a), load(b)) for a, b in args.qa]
    qa = [line for a, b in runs for line in qa_rows(a, b, prefixes)]
    pairs = [pair for a, b in runs for pair in qa_pairs(a, b, prefixes)]
    pooled = pooled_line(pairs, tuple(args.labels)) if args.pooled and pairs else ""
    lm = lm_rows(load(args.lm[0]), load(args.lm[1])) if args.lm else []
    title = args.title or title or f"{args.labels[1]} against {args.labels[0]}"
    intro = intro or (
        f"`benchmarks/paired_runs.py`: the same questions and windows, run {args.labels[0]} "
        f"against run {args.labels[1]}. Paired: right only with one of them (exact sign test); "
        f"windows where {args.labels[1]}'s NLL is the higher."
    )
    text = paired_body(title, intro, tuple(args.labels), qa, lm, pooled)
    print(text)
    if not args.no_write:
        write_section(args.section, text)


if __name__ == "__main__":
    main()

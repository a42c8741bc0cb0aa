"""Expand's spans cut at the index's stride against at sentence starts (docs/training.md "What
next" 16), with spans-only as the control: three `eval qa` runs on the same questions, paired.

    .venv/bin/extok-rag eval qa --sets hotpotqa --rows expand --expand-budgets 0.25,0.35 \
        --out AFTER-HOTPOT.json ...   # and the rows before the change, and spans-only's
    .venv/bin/python benchmarks/expand_cut.py \
        --before BEFORE-HOTPOT.json BEFORE-SQUAD.json --after AFTER-HOTPOT.json AFTER-SQUAD.json \
        --spans SPANS-HOTPOT.json SPANS-SQUAD.json [--no-write]

Per set and share: accuracy and median positions of expand cut at the stride, expand cut at
sentence starts, and spans-only; the questions right with only one of each pair (exact sign
test), and how many answers the cut left the same; both pairs pooled over every cell (the
rule of item 16 reads the first). Writes section `expand-cut` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_runs import paired_cell
from report import machine_line, write_section

ARMS = ("before", "after", "spans")
SHARES = ("0.25", "0.35")


def sets_of(paths: list[Path]) -> dict[str, dict]:
    """Set name -> its result, over the runs given."""
    return {s["name"]: s for p in paths for s in json.loads(p.read_text())["sets"]}


def row_name(arm: str, share: str) -> str:
    return f"{'spans' if arm == 'spans' else 'expand'} {share}·raw top-4"


def set_lines(name: str, runs: dict[str, dict], pooled: dict[str, list]) -> list[str]:
    """One set's table; its `correct` lists are added to `pooled` (arm -> every cell's)."""
    if len({tuple(runs[arm]["qids"]) for arm in ARMS}) != 1:
        raise SystemExit(f"{name}: the runs asked different questions")
    lines = [
        f"**{name}** ({len(runs['before']['qids'])} questions)",
        "",
        "| share | expand, stride cut | expand, sentence starts | spans-only | median positions "
        "(stride / sentences / spans) | right only stride / only sentences | only expand "
        "(sentences) / only spans | same answer (stride, sentences) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for share in SHARES:
        row = {arm: runs[arm]["per_question"][row_name(arm, share)] for arm in ARMS}
        right = {arm: r["correct"] for arm, r in row.items()}
        for arm in ARMS:
            pooled[arm] += right[arm]
        acc = {arm: f"{100 * sum(r) / len(r):.1f}%" for arm, r in right.items()}
        pos = " / ".join(f"{statistics.median(row[arm]['positions']):g}" for arm in ARMS)
        pairs = zip(row["before"]["answers"], row["after"]["answers"], strict=True)
        same = sum(a == b for a, b in pairs)
        lines.append(
            f"| {share} | {acc['before']} | {acc['after']} | {acc['spans']} | {pos} | "
            f"{paired_cell(right['before'], right['after'])} | "
            f"{paired_cell(right['after'], right['spans'])} | {same} / {len(right['before'])} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for arm in ARMS:
        parser.add_argument(f"--{arm}", type=Path, nargs="+", required=True)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    runs = {arm: sets_of(getattr(args, arm)) for arm in ARMS}
    body = [
        "## Expand's spans cut at sentence starts against at the index's stride "
        "(`benchmarks/expand_cut.py`)",
        "",
        "`eval qa --rows expand --expand-budgets 0.25,0.35` with the shipped checkpoint (v1, "
        f"stride 2), float16 index, seed 0, top-4; {machine_line()}. Stride cut: the rows of "
        "What next 14 (the code before); sentence starts: expand's raw spans start where the "
        "sentences do, the state a raw span shares with a compressed run read in the run; "
        "spans-only: What next 15's rows (cut at sentence starts). Paired counts are questions "
        "right with only one row of the pair, with the exact two-sided sign test.",
    ]
    pooled: dict[str, list] = {arm: [] for arm in ARMS}
    for name in runs["before"]:
        body += ["", *set_lines(name, {arm: runs[arm][name] for arm in ARMS}, pooled)]
    body += [
        "",
        "Pooled over every cell, right only with the stride cut / only with sentence starts: "
        f"**{paired_cell(pooled['before'], pooled['after'])}**; expand (sentence starts) / "
        f"spans-only: **{paired_cell(pooled['after'], pooled['spans'])}**.",
    ]
    text = "\n".join(body)
    if not args.no_write:
        write_section("expand-cut", text)
    print(text)


if __name__ == "__main__":
    main()

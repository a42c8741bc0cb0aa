"""Expand's compressed rest of every chunk against only of the chunks it reads raw from
(`AskConfig.expand_rest`, docs/training.md "What next" 14), with spans-only as the control:
`eval qa` rows on the same questions, paired. The option measured no change and was removed
again; its rows are run at commit 0de36ad (where `--expand-rests` exists).

    .venv/bin/extok-rag eval qa --sets hotpotqa --rows expand,spans \
        --expand-budgets 0.25,0.35 --expand-rests every,spanned --out HOTPOT.json ...
    .venv/bin/python benchmarks/expand_rest.py HOTPOT.json SQUAD.json \
        [--hotpot-types .../hotpotqa.json] [--no-write]

Per set and share: accuracy and median positions of expand (every rest), expand (spanned
rest) and spans-only; the questions right with only one of each pair and the exact sign test;
the spanned-against-every counts pooled over every cell (the rule of item 14). With
`--hotpot-types` (the HotpotQA file with each question's `type`), HotpotQA's pairs again for
bridge and comparison questions apart. Writes section `expand-rest` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_runs import paired_cell
from report import machine_line, write_section

ROW = re.compile(r"^(expand|spans) (\d\.\d\d)·raw top-(\d+)( spanned rest)?$")
ARMS = ("every", "spanned", "spans")


def cells(result: dict) -> dict[str, dict[str, str]]:
    """share -> arm -> row name, for the light-frame budget rows of one set."""
    out: dict[str, dict[str, str]] = {}
    for name in result["per_question"]:
        found = ROW.match(name)
        if not found:
            continue
        mode, share, _, spanned = found.groups()
        arm = "spans" if mode == "spans" else ("spanned" if spanned else "every")
        out.setdefault(share, {})[arm] = name
    return {s: arms for s, arms in sorted(out.items()) if set(arms) == set(ARMS)}


def set_table(result: dict, types: dict[str, str] | None) -> tuple[list[str], list, list]:
    """The set's lines, and its spanned and every rows' `correct` lists, cells concatenated
    (for the pooled count)."""
    per, qids = result["per_question"], result["qids"]
    n = len(qids)
    lines = [
        f"**{result['name']}** ({n} questions)",
        "",
        "| share | expand, every rest | expand, spanned rest | spans-only | median positions "
        "(every / spanned / spans) | right only spanned / only every | only spanned / only "
        "spans | only every / only spans |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    spanned, every = [], []
    groups = sorted(set(types[q] for q in qids)) if types else []
    by_type = []
    for share, arms in cells(result).items():
        right = {arm: per[name]["correct"] for arm, name in arms.items()}
        pos = {arm: f"{statistics.median(per[name]['positions']):g}" for arm, name in arms.items()}
        spanned += right["spanned"]
        every += right["every"]
        acc = {arm: 100 * sum(right[arm]) / n for arm in ARMS}
        lines.append(
            f"| {share} | {acc['every']:.1f}% | {acc['spanned']:.1f}% | {acc['spans']:.1f}% | "
            f"{pos['every']} / {pos['spanned']} / {pos['spans']} | "
            f"{paired_cell(right['spanned'], right['every'])} | "
            f"{paired_cell(right['spanned'], right['spans'])} | "
            f"{paired_cell(right['every'], right['spans'])} |"
        )
        for group in groups:
            mine = {
                arm: [r for r, q in zip(right[arm], qids, strict=True) if types[q] == group]
                for arm in ARMS
            }
            by_type.append(
                f"| {share} | {group} ({len(mine['every'])}) | {sum(mine['every'])} / "
                f"{sum(mine['spanned'])} / {sum(mine['spans'])} | "
                f"{paired_cell(mine['spanned'], mine['every'])} | "
                f"{paired_cell(mine['spanned'], mine['spans'])} |"
            )
    if by_type:
        lines += [
            "",
            f"{result['name']} by question type:",
            "",
            "| share | type (questions) | right: every / spanned / spans | only spanned / only "
            "every | only spanned / only spans |",
            "|---|---|---:|---:|---:|",
            *by_type,
        ]
    return lines, spanned, every


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="`eval qa --out` JSON files")
    parser.add_argument("--hotpot-types", type=Path, help="HotpotQA JSON with `_id`, `type`")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    runs = [json.loads(path.read_text()) for path in args.results]
    types = None
    if args.hotpot_types:
        types = {r["_id"]: r["type"] for r in json.loads(args.hotpot_types.read_text())}
    body = [
        "## Expand's rest: of every chunk, or of the chunks read raw (`benchmarks/expand_rest.py`)",
        "",
        "`eval qa --rows expand,spans --expand-budgets 0.25,0.35 --expand-rests every,spanned` "
        f"with the shipped checkpoint (v1), float16 index, seed 0, top-4; {machine_line()}. "
        "Every rest: the compressed rest of every chunk offered is read (and paid for); "
        "spanned rest: only chunks holding a raw span are read, each with its rest compressed. "
        "Paired counts are questions right with only one row of the pair, with the exact "
        "two-sided sign test.",
    ]
    spanned, every = [], []
    for run in runs:
        for result in run["sets"]:
            lines, s, e = set_table(result, types if result["name"] == "hotpotqa" else None)
            spanned += s
            every += e
            body += ["", *lines]
    body += [
        "",
        f"Pooled over every cell, right only with the spanned rest / only with every rest: "
        f"**{paired_cell(spanned, every)}**.",
    ]
    text = "\n".join(body)
    if not args.no_write:
        write_section("expand-rest", text)
    print(text)


if __name__ == "__main__":
    main()

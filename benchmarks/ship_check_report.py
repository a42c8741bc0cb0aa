"""The ship check of a candidate checkpoint against v1 (research/scripts/ship_check.sh), with the
ship rule and the targets of issue 25 computed from the runs themselves.

    .venv/bin/python benchmarks/ship_check_report.py NAME --qa-v1 QA_V1.json --qa QA.json \
        [--lm-v1 LM_V1.json --lm LM.json] [--no-write]

Both `eval qa` runs must have asked the same questions (seed 0). Rows used: from v1's run
`none`, `raw top-4` (when run) and `extok ×4 top-4`; from the candidate's `extok ×2/×4`,
`hybrid ×4`, and `expand` / `spans` at each share of raw's positions. Paired statistics: right
only with one row or the other, exact two-sided sign test; the ×4 − none difference with a
95% interval from the paired differences (normal approximation). Writes section
`ship-check-NAME` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from extok_rag.ask.modes import AUTO_BUDGET_MODE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_runs import paired
from report import machine_line, write_section

X4, NONE, RAW = "extok ×4 top-4", "none", "raw top-4"


def acc(correct: list[bool]) -> float:
    return sum(correct) / len(correct)


def diff_interval(a: list[bool], b: list[bool]) -> tuple[float, float]:
    """Mean of a − b (in points) and the half-width of its 95% interval."""
    d = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    return 100 * mean, 100 * 1.96 * math.sqrt(var / n)


def budget_rows(rows: dict) -> list[tuple[str, str, str]]:
    """(share, expand row, spans row) for every share both rows exist at."""
    out = []
    for name in rows:
        m = re.match(r"expand ([\d.]+)·raw top-4", name)
        spans = f"spans {m.group(1)}·raw top-4" if m else None
        if m and spans in rows:
            out.append((m.group(1), name, spans))
    return out


def set_section(v1: dict, cand: dict, name: str) -> tuple[list[str], dict]:
    if v1["qids"] != cand["qids"]:
        raise SystemExit(f"{v1['name']}: the two runs asked different questions")
    a, b = v1["per_question"], cand["per_question"]
    lines = [
        f"**{cand['name']}** ({len(cand['qids'])} questions)",
        "",
        "| row | v1 | " + name + " | median positions |",
        "|---|---:|---:|---:|",
    ]
    for row in (NONE, RAW):
        if row in a:
            pos = sorted(a[row]["positions"])[len(a[row]["positions"]) // 2]
            lines.append(f"| {row} | {100 * acc(a[row]['correct']):.1f}% | (same) | {pos} |")
    for row, data in b.items():
        v1_cell = f"{100 * acc(a[row]['correct']):.1f}%" if row in a else "—"
        pos = sorted(data["positions"])[len(data["positions"]) // 2]
        lines.append(f"| {row} | {v1_cell} | {100 * acc(data['correct']):.1f}% | {pos} |")
    facts: dict = {"set": cand["name"]}
    if X4 in a and X4 in b:
        facts["x4_vs_v1"] = paired(a[X4]["correct"], b[X4]["correct"])
        facts["x4"] = 100 * acc(b[X4]["correct"])
        facts["x4_v1"] = 100 * acc(a[X4]["correct"])
    if NONE in a and X4 in b:
        facts["x4_minus_none"] = diff_interval(b[X4]["correct"], a[NONE]["correct"])
        facts["x4_v1_minus_none"] = diff_interval(a[X4]["correct"], a[NONE]["correct"])
    if RAW in a and X4 in b:
        facts["x4_over_raw"] = acc(b[X4]["correct"]) / max(acc(a[RAW]["correct"]), 1e-9)
        facts["x4_v1_over_raw"] = acc(a[X4]["correct"]) / max(acc(a[RAW]["correct"]), 1e-9)
    facts["expand_vs_spans"] = {
        share: (
            100 * (acc(b[e]["correct"]) - acc(b[s]["correct"])),
            paired(b[e]["correct"], b[s]["correct"]),
        )
        for share, e, s in budget_rows(b)
    }
    return lines, facts


def lm_lines(v1: dict, cand: dict, name: str) -> tuple[list[str], dict]:
    if v1["windows"] != cand["windows"]:
        raise SystemExit("eval lm: the two runs read different windows")
    lines = ["| T | row | v1 ppl | " + name + " ppl | change |", "|---:|---|---:|---:|---:|"]
    changes = {}
    for length, cells in v1["results"].items():
        for key, x in cells.items():
            y = cand["results"].get(length, {}).get(key)
            if not key.startswith("extok") or y is None or x["ppl"] is None:
                continue
            change = 100 * (y["ppl"] / x["ppl"] - 1)
            changes[f"{int(length) // 1024}K {key}"] = change
            lines.append(
                f"| {int(length):,} | {key} | {x['ppl']:.2f} | {y['ppl']:.2f} | {change:+.1f}% |"
            )
        for key in ("none", "raw-full"):
            if key in cells and cells[key]["ppl"] is not None:
                lines.append(f"| {int(length):,} | {key} | {cells[key]['ppl']:.2f} | | |")
    return lines, changes


def verdicts(facts: list[dict], lm_changes: dict) -> list[str]:
    def fmt_pair(p):
        return f"{p[0]} / {p[1]}, p {p[2]:.3f}"

    out = ["Ship rule (all three must hold):", ""]
    beats = [f["x4_vs_v1"][1] > f["x4_vs_v1"][0] for f in facts if "x4_vs_v1" in f]
    out.append(
        "- ×4 beats v1 on both sets (paired): "
        + ("**yes**" if beats and all(beats) else "**no**")
        + " — "
        + "; ".join(
            f"{f['set']} {f['x4_v1']:.1f}% → {f['x4']:.1f}% (right only v1 / only candidate "
            f"{fmt_pair(f['x4_vs_v1'])})"
            for f in facts
            if "x4_vs_v1" in f
        )
    )
    if lm_changes:
        worst = max(lm_changes.values())
        out.append(
            f"- (d) within 3% of v1: {'**yes**' if worst <= 3 else '**no**'} — "
            + ", ".join(f"{k} {v:+.1f}%" for k, v in lm_changes.items())
        )
    else:
        out.append("- (d) within 3% of v1: not measured")
    wins = [
        share for f in facts for share, (delta, _p) in f["expand_vs_spans"].items() if delta > 0
    ]
    out.append(
        "- expand beats spans-only on at least one set: "
        + ("**yes**" if wins else "**no**")
        + " — "
        + "; ".join(
            f"{f['set']} {share}: {delta:+.1f} points (right only expand / only spans "
            f"{fmt_pair(p)})"
            for f in facts
            for share, (delta, p) in f["expand_vs_spans"].items()
        )
    )
    everywhere = all(
        delta > 0 for f in facts for delta, _p in f["expand_vs_spans"].values()
    ) and any(f["expand_vs_spans"] for f in facts)
    out.append(
        "- the default mode's choice under a budget (`extok_rag/ask/modes.py`, "
        f"`AUTO_BUDGET_MODE`, now {AUTO_BUDGET_MODE!r}): "
        + (
            "**expand** — it beats spans-only at every measured share on every set"
            if everywhere
            else "**spans** — expand does not beat spans-only at every measured share"
        )
    )
    out += ["", "Targets of issue 25 (v1 in brackets):", ""]
    for f in facts:
        if "x4_minus_none" in f:
            d, h = f["x4_minus_none"]
            dv, hv = f["x4_v1_minus_none"]
            out.append(
                f"- {f['set']}: ×4 beats no retrieval beyond its 95% interval: "
                f"{'**met**' if d - h > 0 else '**missed**'} — {d:+.1f} ± {h:.1f} points "
                f"[{dv:+.1f} ± {hv:.1f}]"
            )
        if "x4_over_raw" in f:
            out.append(
                f"- {f['set']}: ×4 ≥ 40% of raw accuracy: "
                f"{'**met**' if f['x4_over_raw'] >= 0.4 else '**missed**'} — "
                f"{f['x4_over_raw']:.2f} [{f['x4_v1_over_raw']:.2f}]"
            )
        for share, (delta, _p) in f["expand_vs_spans"].items():
            out.append(
                f"- {f['set']} at {share}: expand ≥ spans-only + 2 points: "
                f"{'**met**' if delta >= 2 else '**missed**'} — {delta:+.1f}"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--qa-v1", type=Path, required=True)
    parser.add_argument("--qa", type=Path, required=True)
    parser.add_argument("--lm-v1", type=Path)
    parser.add_argument("--lm", type=Path)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load = lambda p: json.loads(p.read_text())  # noqa: E731
    v1, cand = load(args.qa_v1), load(args.qa)
    body = [
        f"## Ship check: {args.name} against v1 (`research/scripts/ship_check.sh`, issue 25)",
        "",
        "`benchmarks/ship_check_report.py` — `eval qa` on the same questions (seed 0, top-4, "
        "float16 index), v1's rows and the candidate's; `eval lm` ×4 on the same windows; "
        f"both runs on this machine: {machine_line()} (the report's time).",
        "",
    ]
    facts = []
    cand_sets = {s["name"]: s for s in cand["sets"]}
    for s in v1["sets"]:
        if s["name"] in cand_sets:
            lines, f = set_section(s, cand_sets[s["name"]], args.name)
            body += [*lines, ""]
            facts.append(f)
    lm_changes: dict = {}
    if args.lm_v1 and args.lm:
        lines, lm_changes = lm_lines(load(args.lm_v1), load(args.lm), args.name)
        body += ["`eval lm`, row (d) ×4 and the references:", "", *lines, ""]
    body += verdicts(facts, lm_changes)
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section(f"ship-check-{args.name}", text)


if __name__ == "__main__":
    main()

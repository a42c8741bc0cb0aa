"""Query-aware expansion against its controls: accuracy against prompt positions for every
`eval qa` row, one panel per QA set, as a PNG in docs/.

    .venv/bin/extok-rag eval qa --expand-budgets 0.25,0.35,0.5 --out /tmp/expand.json
    .venv/bin/python benchmarks/expand_qa.py /tmp/expand.json [--png docs/expand-qa.png] \
        [--report /tmp/expand.md]   # eval qa's printed report (tables, paired counts, targets)

Rows: none, raw top-n, compressed at each k, hybrid, and at each budget share the expand row
(best sentences raw, the rest compressed), spans only (the best sentences raw, nothing else)
and raw truncated, all on the same questions. Writes section `expand-qa` of
docs/benchmarks.md (the plot and the eval's own tables come from the same JSON).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section

DOCS = Path(__file__).resolve().parent.parent / "docs"
STYLE = {  # row family -> (marker, colour)
    "expand": ("o", "tab:red"),
    "spans": ("s", "tab:orange"),
    "truncated": ("^", "tab:gray"),
    "extok": ("D", "tab:blue"),
    "hybrid": ("P", "tab:purple"),
    "raw": ("*", "black"),
    "none": ("x", "black"),
}


def family(name: str) -> str:
    return name.split()[0]


def plot(sets: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), squeeze=False)
    for ax, result in zip(axes[0], sets, strict=True):
        rows = result["summary"]
        for fam, (marker, colour) in STYLE.items():
            mine = sorted(
                (r for r in rows if family(r["name"]) == fam), key=lambda r: r["positions_median"]
            )
            if not mine:
                continue
            xs = [r["positions_median"] for r in mine]
            ys = [100 * r["accuracy"] for r in mine]
            line = "-" if fam in ("expand", "spans", "truncated") else ""
            ax.plot(xs, ys, marker=marker, linestyle=line, color=colour, label=fam)
        ax.set_title(f"{result['name']} ({len(result['qids'])} questions)")
        ax.set_xlabel("prompt positions (median)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def table(result: dict) -> str:
    lines = ["| row | accuracy | positions (median) |", "|---|---:|---:|"]
    for r in sorted(result["summary"], key=lambda r: r["positions_median"]):
        lines.append(f"| {r['name']} | {100 * r['accuracy']:.1f}% | {r['positions_median']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="JSON written by `eval qa --out`")
    parser.add_argument("--png", type=Path, default=DOCS / "expand-qa.png")
    parser.add_argument("--report", type=Path, help="eval qa's printed report, appended")
    args = parser.parse_args()
    data = json.loads(args.result.read_text())
    plot(data["sets"], args.png)
    cfg = data["config"]
    body = "\n\n".join(
        [
            "## Query-aware expansion: accuracy against positions (`benchmarks/expand_qa.py`)",
            f"From `extok-rag eval qa` with `--expand-budgets "
            f"{','.join(map(str, cfg['expand_budgets']))} --expand-scorer "
            f"{cfg['expand_scorer']}` ({cfg['questions']} questions per set, top-"
            f"{cfg['top_n']}).",
            f"![accuracy against prompt positions]({args.png.relative_to(DOCS)})",
            *(f"### {r['name']}\n\n{table(r)}" for r in data["sets"]),
        ]
    )
    if args.report:
        report = re.sub(r"(?m)^### ", "#### ", args.report.read_text().strip())
        body += "\n\n### The same run's report (`eval qa` output)\n\n" + report
    write_section("expand-qa", body)
    print(body)


if __name__ == "__main__":
    main()

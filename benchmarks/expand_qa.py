"""Query-aware expansion against its controls: accuracy against prompt positions for every
`eval qa` row, one panel per QA set, as a PNG in docs/.

    .venv/bin/extok-rag eval qa --expand-budgets 0.25,0.35,0.5 --out /tmp/expand.json
    .venv/bin/python benchmarks/expand_qa.py /tmp/expand.json [--png docs/expand-qa.png] \
        [--report /tmp/expand.md]   # eval qa's printed report (tables, paired counts, targets)

One JSON per set (`eval qa --sets hotpotqa`, then `--sets squad`, same settings) works too:
pass them all. With `--frames light,standard` each budget row runs in both frames on the same
questions, and the section pairs them.

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
from paired_runs import paired
from report import machine_line, write_section

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
BUDGETED = ("expand", "spans", "truncated")  # rows on a line, one per frame


FRAME_ROW = re.compile(r" (\w+) frame$")  # eval qa's budget rows in another frame (--frames)


def family(name: str) -> str:
    return name.split()[0]


def frame_of(name: str) -> str | None:
    """The frame a row names ("spans 0.35·raw top-4 standard frame"), None for the default."""
    found = FRAME_ROW.search(name)
    return found.group(1) if found else None


def plot(sets: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), squeeze=False)
    for ax, result in zip(axes[0], sets, strict=True):
        rows = result["summary"]
        frames = sorted({frame_of(r["name"]) for r in rows}, key=lambda f: f is not None)
        for fam, (marker, colour) in STYLE.items():
            for frame in frames:
                mine = sorted(
                    (r for r in rows if family(r["name"]) == fam and frame_of(r["name"]) == frame),
                    key=lambda r: r["positions_median"],
                )
                if not mine:
                    continue
                xs = [r["positions_median"] for r in mine]
                ys = [100 * r["accuracy"] for r in mine]
                line = ("-" if frame is None else ":") if fam in BUDGETED else ""
                ax.plot(
                    xs,
                    ys,
                    marker=marker,
                    linestyle=line,
                    color=colour,
                    markerfacecolor=colour if frame is None else "none",
                    label=fam if frame is None else f"{fam} ({frame} frame)",
                )
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


def frame_pairs(result: dict) -> str | None:
    """Each budget row against its twin in another frame, on the same questions: accuracy,
    median positions, questions only one of the two gets right and the sign-test p. None
    when the run has one frame."""
    rows = {r["name"]: r for r in result["summary"]}
    per = result["per_question"]
    lines = [
        "| row | accuracy: light / other | positions: light / other | right only light / "
        "only other | sign-test p |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in rows:
        frame, light = frame_of(name), FRAME_ROW.sub("", name)
        if frame is None or light not in rows:
            continue
        a, b = per[light]["correct"], per[name]["correct"]
        only_a, only_b, p = paired(a, b)
        lines.append(
            f"| {light} vs {frame} frame | {100 * rows[light]['accuracy']:.1f}% / "
            f"{100 * rows[name]['accuracy']:.1f}% | {rows[light]['positions_median']:,.0f} / "
            f"{rows[name]['positions_median']:,.0f} | {only_a} / {only_b} | {p:.3f} |"
        )
    return "\n".join(lines) if len(lines) > 2 else None


def set_section(result: dict) -> str:
    pairs = frame_pairs(result)
    parts = [f"### {result['name']}", table(result)]
    if pairs:
        parts += [f"Light frame against the frame before, row by row ({result['name']}):", pairs]
    return "\n\n".join(parts)


def merged(runs: list[dict]) -> dict:
    """Runs of one setting (e.g. one `eval qa` per set) as one: their sets in order. The
    runs may differ in their frames only (each set's budget rows then name their frame)."""

    def setting(run: dict) -> dict:
        return {k: v for k, v in run["config"].items() if k != "frames"}

    if any(setting(run) != setting(runs[0]) for run in runs):
        raise SystemExit("the eval qa runs differ in settings: plot one run, or runs of one")
    frames = {
        s["name"]: run["config"].get("frames", ["standard"]) for run in runs for s in run["sets"]
    }
    return {
        "config": runs[0]["config"],
        "frames": frames,
        "sets": [s for run in runs for s in run["sets"]],
    }


def frames_text(frames: dict[str, list[str]]) -> str:
    """`--frames` as run: one list, or each set's where they differ."""
    lists = {",".join(f) for f in frames.values()}
    if len(lists) == 1:
        return f"--frames {lists.pop()}"
    return "--frames " + "; ".join(f"{','.join(f)} ({name})" for name, f in frames.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "results",
        type=Path,
        nargs="+",
        help="JSON written by `eval qa --out` (one per set, "
        "or all sets in one), of the same settings",
    )
    parser.add_argument("--png", type=Path, default=DOCS / "expand-qa.png")
    parser.add_argument("--report", type=Path, help="eval qa's printed report, appended")
    args = parser.parse_args()
    data = merged([json.loads(path.read_text()) for path in args.results])
    plot(data["sets"], args.png)
    cfg = data["config"]
    body = "\n\n".join(
        [
            "## Query-aware expansion: accuracy against positions (`benchmarks/expand_qa.py`)",
            f"From `extok-rag eval qa` with `--expand-budgets "
            f"{','.join(map(str, cfg['expand_budgets']))} --expand-scorer "
            f"{cfg['expand_scorer']} {frames_text(data['frames'])}` "
            f"({cfg['questions']} questions per set, top-{cfg['top_n']}, retrieval "
            f"{cfg.get('retrieval', 'vector')}). Budget frames: light, the question once "
            "after the chunks read and no default system prompt; standard, the frame before "
            "issue 29 (the question twice, a slot for every chunk), dotted. Positions: the "
            f"whole chat prompt. Run on {machine_line()}.",
            f"![accuracy against prompt positions]({args.png.relative_to(DOCS)})",
            *(set_section(r) for r in data["sets"]),
        ]
    )
    if args.report:
        report = re.sub(r"(?m)^### ", "#### ", args.report.read_text().strip())
        body += "\n\n### The same run's report (`eval qa` output)\n\n" + report
    write_section("expand-qa", body)
    print(body)


if __name__ == "__main__":
    main()

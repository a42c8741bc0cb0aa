"""Summarise the v3 capacity study (research/scripts/study_v3.sh) into docs/training.md, section
`study-v3`.

    .venv/bin/python benchmarks/study_v3.py [--lm-v1 LM_V1.json] [RUN_DIR ...]
        (default runs: <home>/runs/v3s-*; default --lm-v1: <home>/ship-check/lm-v1.json)

For each variant at equal CPU-minutes: its settings over `research/configs/v3/study/base.json`,
steps, CPU-minutes, seconds per step, the last reconstruction probe (gap closed ×2/×4/×8), the last
answer probe (gap closed ×2/×4/×8), the content probe's self/other ×2 perplexity, each curve's
slope at its end (×4 gap points per 100 steps between the last two probes: CPU-minutes favour
small models, the GPU affords tens of times more steps), and (d) ×4 at 2K against v1's on the
same windows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import settings_text, write_section

from extok_rag.config import home_dir

DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"
STUDY = Path(__file__).resolve().parent.parent / "research" / "configs" / "v3" / "study"


def records(run: Path) -> list[dict]:
    log = run / "log.jsonl"
    if not log.exists():
        return []
    return [json.loads(x) for x in log.read_text().splitlines() if x.strip()]


def probe_points(recs: list[dict], key: str) -> list[tuple[int, dict]]:
    return [(r["step"], r[key]) for r in recs if key in r]


def slope(points: list[tuple[int, dict]], field: str) -> float | None:
    """Gap points per 100 steps between the last two probes."""
    if len(points) < 2 or points[-1][0] == points[-2][0]:
        return None
    (s0, a), (s1, b) = points[-2], points[-1]
    return 100 * 100 * (b[field] - a[field]) / (s1 - s0)


def loss_slope(steps: list[dict], objective: str) -> float | None:
    """The training curve's slope at its end: least squares over the steps of the run's
    second half that trained `objective`, in nats per 100 steps (negative: still falling).
    The probes run once per variant (a probe costs ~2.5 minutes, a variant gets 24-35
    steps), so the loss curves are what shows how fast each variant still learns."""
    half = steps[-1]["step"] / 2
    points = [
        (r["step"], r["objectives"][objective])
        for r in steps
        if r["step"] > half and objective in r.get("objectives", {})
    ]
    if len(points) < 4:
        return None
    xs, ys = zip(*points, strict=True)
    mx, my = statistics.mean(xs), statistics.mean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return 100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def ppl_d(lm: dict) -> float | None:
    cell = lm["results"].get("2048", {}).get("extok@4")
    return cell["ppl"] if cell else None


def summarise(run: Path, lm_v1: dict | None) -> dict | None:
    recs = records(run)
    steps = [r for r in recs if "loss" in r]
    if not steps:
        return None
    variant = run.name.removeprefix("v3s-")
    config = STUDY / f"{variant}.json"
    recon, answer = probe_points(recs, "recon_probe"), probe_points(recs, "answer_probe")
    content = probe_points(recs, "probe")
    lm_file = run / "lm-2k.json"
    d = ppl_d(json.loads(lm_file.read_text())) if lm_file.exists() else None
    d_v1 = ppl_d(lm_v1) if lm_v1 else None
    return {
        "variant": variant,
        "settings": json.loads(config.read_text()) if config.exists() else {},
        "steps": steps[-1]["step"],
        "cpu_min": steps[-1]["cpu_elapsed_s"] / 60,
        "s_per_step": statistics.median(r["step_s"] for r in steps),
        "recon": recon[-1][1] if recon else {},
        "answer": answer[-1][1] if answer else {},
        "content": content[-1][1] if content else {},
        "recon_slope": slope(recon, "gap_k4"),
        "answer_slope": slope(answer, "gap_k4"),
        "recon_loss_slope": loss_slope(steps, "reconstruction"),
        "qa_loss_slope": loss_slope(steps, "qa"),
        "d": d,
        "d_change": 100 * (d / d_v1 - 1) if d and d_v1 else None,
    }


def pct(x: dict, k: int) -> str:
    return f"{x[f'gap_k{k}']:.0%}" if x else "—"


def num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def table(rows: list[dict]) -> str:
    lines = [
        "| variant | settings | steps | CPU-min | s/step | reconstruction ×2 / ×4 / ×8 | "
        "slope ×4 | answer ×2 / ×4 / ×8 | slope ×4 | self / other ×2 | (d) ×4 2K (vs v1) | "
        "loss slope: recon / qa |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        settings = settings_text(r["settings"]) or "base"
        c = r["content"]
        content = f"{c['self_k2']:.2f} / {c['other_k2']:.2f}" if c else "—"
        d = (
            f"{r['d']:.2f} ({r['d_change']:+.1f}%)"
            if r["d"] is not None and r["d_change"] is not None
            else num(r["d"], ".2f")
        )
        lines.append(
            f"| {r['variant']} | `{settings}` | {r['steps']} | {r['cpu_min']:.1f} | "
            f"{r['s_per_step']:.1f} | "
            + " / ".join(pct(r["recon"], k) for k in (2, 4, 8))
            + f" | {num(r['recon_slope'], '+.1f')} | "
            + " / ".join(pct(r["answer"], k) for k in (2, 4, 8))
            + f" | {num(r['answer_slope'], '+.1f')} | {content} | {d} | "
            f"{num(r['recon_loss_slope'], '+.2f')} / {num(r['qa_loss_slope'], '+.2f')} |"
        )
    return "\n".join(lines)


def kept_rows(measured: set[str], doc: Path = DOC) -> dict[str, str]:
    """The section's table rows of variants not measured now (their run directories gone from
    this machine's cache), as the section has them: a later run adds its row, never drops
    another's."""
    text = doc.read_text() if doc.exists() else ""
    begin, end = "<!-- begin study-v3 -->", "<!-- end study-v3 -->"
    if begin not in text:
        return {}
    section = text.split(begin, 1)[1].split(end, 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    by_variant = {row.split("|")[1].strip(): row for row in rows}
    return {v: row for v, row in by_variant.items() if v not in measured}


# (control, variant) pairs trained in one session on the same batches (same seed and config
# but the variant's settings): their per-step training losses compare step by step
PAIRS = (
    ("d8-full-recon", "d8-full-query-pool-recon"),
    ("d8-full-again", "d8-full-query-pool"),
    ("d8-full-recon-long", "d8-full-query-pool-recon-long"),  # the first pair to 75 CPU-min
)
PROBES = (("recon_probe", "reconstruction"), ("answer_probe", "answer"))


def paired_losses(control: Path, variant: Path) -> dict | None:
    """The variant's training loss minus the control's at each step both ran, on the same
    batches (checked: the same k per row): wins, median difference over each third of the
    steps, and per objective."""
    a = {r["step"]: r for r in records(control) if "loss" in r}
    b = {r["step"]: r for r in records(variant) if "loss" in r}
    steps = sorted(set(a) & set(b))
    if not steps or any(a[s]["k"] != b[s]["k"] for s in steps):
        return None
    diffs = [b[s]["loss"] - a[s]["loss"] for s in steps]
    thirds = [diffs[i * len(diffs) // 3 : (i + 1) * len(diffs) // 3] for i in range(3)]
    objectives = sorted({o for s in steps for o in a[s]["objectives"]})
    per_objective = {}
    for o in objectives:
        d = [
            b[s]["objectives"][o] - a[s]["objectives"][o]
            for s in steps
            if o in a[s]["objectives"] and o in b[s]["objectives"]
        ]
        per_objective[o] = (sum(x < 0 for x in d), len(d), statistics.median(d))
    return {
        "steps": len(steps),
        "wins": sum(x < 0 for x in diffs),
        "thirds": [statistics.median(t) for t in thirds if t],
        "per_objective": per_objective,
    }


def probe_pairs_table(home: Path) -> str | None:
    """Each pair's probes at every step both runs probed: gap shares at ×2 / ×4 / ×8."""
    lines = [
        "| control → variant | step | probe | control ×2 / ×4 / ×8 | variant ×2 / ×4 / ×8 |",
        "|---|---:|---|---:|---:|",
    ]
    for control, variant in PAIRS:
        a, b = records(home / f"v3s-{control}"), records(home / f"v3s-{variant}")
        for key, name in PROBES:
            pa, pb = dict(probe_points(a, key)), dict(probe_points(b, key))
            for step in sorted(set(pa) & set(pb)):
                gaps = [
                    " / ".join(f"{100 * p.get(f'gap_k{k}', float('nan')):.0f}%" for k in (2, 4, 8))
                    for p in (pa[step], pb[step])
                ]
                lines.append(f"| {control} → {variant} | {step} | {name} | {gaps[0]} | {gaps[1]} |")
    return "\n".join(lines) if len(lines) > 2 else None


def pairs_table(home: Path) -> str | None:
    lines = [
        "| control → variant | steps | variant lower | median Δ loss, thirds of the run | "
        "per objective: lower / steps, median Δ |",
        "|---|---:|---:|---|---|",
    ]
    for control, variant in PAIRS:
        p = paired_losses(home / f"v3s-{control}", home / f"v3s-{variant}")
        if p is None:
            continue
        objectives = "; ".join(
            f"{o} {w}/{n}, {m:+.2f}" for o, (w, n, m) in p["per_objective"].items()
        )
        thirds = " / ".join(f"{t:+.2f}" for t in p["thirds"])
        lines.append(
            f"| {control} → {variant} | {p['steps']} | {p['wins']} | {thirds} | {objectives} |"
        )
    return "\n".join(lines) if len(lines) > 2 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--lm-v1", type=Path, default=home_dir() / "ship-check" / "lm-v1.json")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    runs = args.runs or sorted((home_dir() / "runs").glob("v3s-*"))
    lm_v1 = json.loads(args.lm_v1.read_text()) if args.lm_v1.exists() else None
    rows = [s for s in (summarise(r, lm_v1) for r in runs) if s is not None]
    lines = table(rows).splitlines()
    old = kept_rows({r["variant"] for r in rows})
    new = {r["variant"]: line for r, line in zip(rows, lines[2:], strict=True)}
    merged = "\n".join([*lines[:2], *(line for _, line in sorted({**old, **new}.items()))])
    base = json.loads((STUDY / "base.json").read_text())
    emit(
        "study-v3",
        "Study v3 table",
        "Common settings (`research/configs/v3/study/base.json`): "
        + settings_text(base)
        + ". Probes: 48 held-out HotpotQA items (reconstruction: 128 tokens); probe slopes "
        "in gap points per 100 steps between the last two probes (— : one probe, at the "
        "end); loss slopes: least squares over the second half's steps of that objective, "
        "nats per 100 steps (negative: still learning).",
        merged,
        not args.no_write,
    )
    pairs = pairs_table(home_dir() / "runs")
    if pairs:
        emit(
            "study-v3-pairs",
            "Study v3: paired training losses",
            "Pairs run in one session on this machine, on the same batches (same seed, the "
            "same k per row at every step): the variant's training loss minus the "
            "control's, step by step (negative: the variant lower). In 150 steps no batch "
            "repeats (60,000 paragraphs, 11,400 sequences): each step compares on unseen data. "
            "The second table: the probes at the steps both runs probed (a run's steps in its "
            "CPU-minutes differ, so its last probe can fall at another step).",
            "\n\n".join(t for t in (pairs, probe_pairs_table(home_dir() / "runs")) if t),
            not args.no_write,
        )


def emit(section: str, title: str, intro: str, table_text: str, write: bool) -> None:
    body = "\n".join(
        [f"## {title} (generated by `benchmarks/study_v3.py`)", "", intro, "", table_text]
    )
    print(body)
    if write:
        write_section(section, body, doc=DOC)


if __name__ == "__main__":
    main()

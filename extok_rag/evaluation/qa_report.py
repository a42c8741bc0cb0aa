"""Markdown for `eval qa`: one table per QA set (conditions × scores), ratios against raw
top-n, the paired comparison of compressed ×4 with raw, and the issue's targets checked."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from extok_rag.evaluation.qa import ConditionResult, SetResult

HEADER = (
    "| condition | recall@n | accuracy | F1 | prompt positions | prefill ms | total ms "
    "| answer tokens | accuracy / raw | positions / raw | prefill speed-up |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    return "—" if a is None or not b else f"{a / b:.{digits}f}"


def raw_of(result: SetResult) -> ConditionResult | None:
    """The raw top-n row; None when `--rows` left it out (no ratios or targets then)."""
    return next((r for r in result.results if r.condition.mode == "raw"), None)


def condition_line(row: ConditionResult, raw: dict | None) -> str:
    s = row.summary()
    raw = raw or {"accuracy": None, "positions_median": None, "prefill_ms_median": None}
    return (
        f"| {s['name']} | {percent(s['recall'])} | {percent(s['accuracy'])} | "
        f"{100 * s['f1']:.1f} | {number(s['positions_median'])} | "
        f"{number(s['prefill_ms_median'])} | {number(s['total_ms_median'])} | "
        f"{s['answer_tokens_mean']:.1f} | {ratio(s['accuracy'], raw['accuracy'])} | "
        f"{ratio(s['positions_median'], raw['positions_median'])} | "
        f"{ratio(raw['prefill_ms_median'], s['prefill_ms_median'])}× |"
    )


def speed_text(raw: dict, row: dict, checked: bool = True) -> str:
    """The row's prefill speed-up over raw and the ≥ 2.5× target; 'not timed' without timed
    questions (`--latency-questions 0`) rather than a ratio of nothing."""
    if not raw["prefill_ms_median"] or not row["prefill_ms_median"]:
        return "prefill not timed (--latency-questions 0)"
    speed = raw["prefill_ms_median"] / row["prefill_ms_median"]
    target = f" (target ≥ 2.5×: {'met' if speed >= 2.5 else 'missed'})" if checked else ""
    return f"a {speed:.2f}× faster prefill{target}"


def paired(a: ConditionResult, b: ConditionResult) -> str:
    """How often a is right where b is wrong, and the other way round (same questions)."""
    only_a = sum(x and not y for x, y in zip(a.correct, b.correct, strict=True))
    only_b = sum(y and not x for x, y in zip(a.correct, b.correct, strict=True))
    return (
        f"{a.condition.name} vs {b.condition.name}: right only with the first on {only_a}, "
        f"only with the second on {only_b} of {len(a.correct)} questions"
    )


def targets(result: SetResult, k: int = 4) -> list[str]:
    """The ask issue's targets: ×k keeps ≥ 90% of raw accuracy with ≤ 1/k of the positions
    and ≥ 2.5× lower prefill; at an equal position budget compressed beats raw."""
    raw_row = raw_of(result)
    if raw_row is None:
        return []
    raw = raw_row.summary()
    lines = []
    for row in result.results:
        s = row.summary()
        if row.condition.mode != "compressed" or row.condition.k != k:
            continue
        if row.condition.top_n == raw_row.condition.top_n:
            keep = s["accuracy"] / raw["accuracy"] if raw["accuracy"] else float("nan")
            share = s["positions_median"] / raw["positions_median"]
            lines.append(
                f"- ×{k} keeps {100 * keep:.0f}% of raw accuracy (target ≥ 90%: "
                f"{'met' if keep >= 0.9 else 'missed'}) with {share:.2f} of raw's prompt "
                f"positions and {speed_text(raw, s)}."
            )
        else:
            verdict = "beats" if s["accuracy"] > raw["accuracy"] else "does not beat"
            lines.append(
                f"- At about raw's position budget, {s['name']} ({percent(s['accuracy'])}, "
                f"{number(s['positions_median'])} positions) {verdict} raw "
                f"({percent(raw['accuracy'])}, {number(raw['positions_median'])} positions)."
            )
        lines.append(f"- {paired(row, raw_row)}.")
    return lines


def expand_targets(result: SetResult) -> list[str]:
    """The expansion issue's targets: expand keeps ≥ 95% of raw accuracy at ≤ 35% of raw's
    positions; at equal positions it beats spans only (paired); its prefill at the 0.35 budget
    is ≥ 2.5× faster than raw's."""
    raw_row = raw_of(result)
    if raw_row is None:
        return []
    raw = raw_row.summary()
    by = {r.condition.name: r for r in result.results}
    lines = []
    for row in result.results:
        c = row.condition
        if c.mode != "expand":
            continue
        s = row.summary()
        keep = s["accuracy"] / raw["accuracy"] if raw["accuracy"] else float("nan")
        share = s["positions_median"] / raw["positions_median"]
        verdict = "met" if keep >= 0.95 and share <= 0.35 else "missed"
        if c.share is not None and c.share > 0.35:  # a budget the target does not cover
            verdict = "not a target budget"
        lines.append(
            f"- {c.name}: keeps {100 * keep:.0f}% of raw accuracy with {share:.2f} of raw's "
            f"positions (target ≥ 95% at ≤ 0.35: {verdict}); "
            f"{speed_text(raw, s, checked=c.share == 0.35)}."
        )
        for control in ("spans", "truncated"):
            other = by.get(c.name.replace("expand", control, 1))
            if other is not None:
                lines.append(f"  - {paired(row, other)}.")
    return lines


def set_markdown(result: SetResult) -> str:
    raw_row = raw_of(result)
    raw = raw_row.summary() if raw_row is not None else None
    lines = [f"### {result.name}", ""]
    lines.append(
        f"{len(result.qids)} questions; corpus {result.corpus_paragraphs:,} paragraphs = "
        f"{result.index_chunks:,} indexed chunks."
    )
    lines += ["", HEADER]
    lines += [condition_line(row, raw) for row in result.results]
    lines += ["", *targets(result), *expand_targets(result)]
    return "\n".join(lines)


def qa_markdown(results: list[SetResult]) -> str:
    return "\n\n".join(set_markdown(r) for r in results)

"""How much reconstruction does ×k need before the frozen LLM answers from it? The repeat
fit, read along the way.

    .venv/bin/python benchmarks/recon_curve.py [--checks 0,1,2,3,4,6,8,12,20,40]
        [sibling_oracle.py's settings] [--report-only] [--no-write]

`sibling_oracle.py`'s repeat arm fits each SQuAD paragraph's ×k vectors, from the tokenizer's
states, to repeat the paragraph; no question is seen. At 40 steps they close 98.8% of the
reconstruction gap, and on 24 paragraphs answer 14 of the 120 questions (held-out and
siblings) against raw text's 34. The issue's reconstruction target is 50% of the gap; this
script asks which gap the answers need. It takes the sibling oracle's items, settings and
journal (so its baselines serve), fits the repeat arm again, the same fit, and at each step of
`--checks` reads the vectors as they are: the reconstruction gap closed, and greedy answers to
every question of the paragraph (the held-out one and its siblings: all unseen by this fit).
At the last step the answers are the repeat arm's, and the report says whether they match.

The reading (docs/training.md "What next" 18), written before the run. A check *qualifies*
when its vectors answer, pooled over every question, at least 40% of raw text's count on the
same questions and beat no context with a paired sign test at p < 0.05:
(j) a check at a gap of 60% or less qualifies: the reconstruction target (50%) carries ×k's
    answer target on these questions;
(k) the qualifying check of least gap is above 60%: the reconstruction target does not; that
    check's gap is what a writer must reach;
(l) no check qualifies, not even the last: vectors that repeat the paragraph are not read at
    the answer target's level, whatever the gap.
Writes section `recon-curve` of docs/training.md; the pieces go into the sibling oracle's
journal as `<chunk>/curve`, and a rerun resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_runs import pair_cell, paired, paired_cell
from reader_oracle import (
    done_chunks,
    fit,
    gathered,
    paragraph_states,
    publish,
    recon_baselines,
    recon_gap,
    tokenizer_users,
)
from report import machine_line
from sibling_oracle import AnswerChunk, SiblingItem, add_arguments, open_run, sibling_rows

from extok_rag.training.answer_probe import greedy_hits

BAR = 0.40  # the issue's ×4 answer target: a share of raw text's count
GAP_TARGET = 0.60  # (j) against (k): the reconstruction target, 50%, and the grid's slack


def curve_arm(llm, tok, chunk: AnswerChunk, items: list[SiblingItem], k, base, args, log) -> dict:
    """The repeat arm's fit (`args.steps` steps), read at each check: held-out and sibling
    greedy answers."""
    users = tokenizer_users(llm, tok, chunk.repeats, chunk.length, k)
    states = paragraph_states(users)
    siblings = sibling_rows(items, states)
    held = chunk.users(states, 0)

    def read() -> dict:
        return {
            "hit": greedy_hits(llm, chunk.questions, held),
            "sib_hit": greedy_hits(llm, *siblings),
        }

    baselines = recon_baselines(base)
    fitted = fit(
        llm,
        chunk.repeats,
        users,
        args.steps,
        args.lr,
        args.steps,
        baselines,
        log,
        checks=tuple(args.checks),
        at=read,
    )
    out = {"nll_end": fitted["nll_end"], "gap": fitted["gap"]}
    for r in fitted["reads"]:
        out |= {f"{key}_{r['step']}": r[key] for key in ("nll", "hit", "sib_hit")}
    return out


def pooled(cells: dict, suffix: str) -> list[bool]:
    """Every question of every paragraph, held-out ones first, then the siblings."""
    return list(cells[f"hit{suffix}"]) + list(cells[f"sib_hit{suffix}"])


def owners(paragraphs: int, siblings: int) -> list[int]:
    """Per pooled question (`pooled`'s order), the index of the paragraph it asks about."""
    return [*range(paragraphs), *(j // siblings for j in range(paragraphs * siblings))]


def verdict(rows: list[tuple[int, float, int, float]], raw: int) -> str:
    """The rule on (step, gap, count, p against none) rows."""
    qualifying = [(gap, step) for step, gap, count, p in rows if count >= BAR * raw and p < 0.05]
    if not qualifying:
        return "(l): no check qualifies"
    gap, step = min(qualifying)
    if gap <= GAP_TARGET:
        return f"(j): step {step} qualifies at a gap of {gap:.1%}"
    return f"(k): the qualifying check of least gap is step {step}, at {gap:.1%}"


def report(
    base: dict, curve: dict, checks: list[int], k: int, against: tuple[dict, dict] | None = None
) -> list[str]:
    """One row per check, the rule's verdict, and the last check against the repeat arm."""
    none, raw = pooled(base, "_none"), pooled(base, "_raw")
    n, n_held = len(none), len(base["hit_none"])
    lines = [
        f"| ×{k} step | reconstruction gap | greedy, every question ({n}) | share of raw's | "
        f"paired with none | paired with raw text | held-out only ({n_held}) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| no context / raw text | — | {sum(none)} / {sum(raw)} | — | — | — | "
        f"{sum(base['hit_none'])} / {sum(base['hit_raw'])} |",
    ]
    rows = []
    for step in checks:
        hits = pooled(curve, f"_{step}")
        gap = recon_gap(base, curve[f"nll_{step}"])
        with_none = paired(hits, none)
        rows.append((step, gap, sum(hits), with_none[2]))
        lines.append(
            f"| {step} | {gap:.1%} | {sum(hits)} | {sum(hits) / max(1, sum(raw)):.2f} | "
            f"{pair_cell(*with_none)} | {paired_cell(hits, raw)} | "
            f"{sum(curve[f'hit_{step}'])} |"
        )
    lines += ["", f"Rule (What next 18): {verdict(rows, sum(raw))}."]
    if against is not None:  # (the curve, the repeat arm) on the chunks both have done
        mine, repeat = against
        last = checks[-1]
        same = (
            mine[f"hit_{last}"] == repeat["hit_own"]
            and mine[f"sib_hit_{last}"] == repeat["sib_hit"]
        )
        lines.append(
            f"Step {last} against `sibling_oracle.py`'s repeat arm on the "
            f"{len(repeat['hit_own'])} paragraphs it has read: "
            + ("every answer the same." if same else "**answers differ**.")
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--checks", default="0,1,2,3,4,6,8,12,20,40")
    args = parser.parse_args()
    args.checks = sorted({int(s) for s in args.checks.split(",")} | {args.steps})
    if args.checks[0] < 0 or args.checks[-1] > args.steps:
        parser.error(f"--checks: steps from 0 to --steps ({args.steps})")
    run = open_run(args)
    journal = run.journal
    if not args.report_only:
        run.resume(
            ["curve"],
            args.k,
            lambda _, c, base, log: curve_arm(
                run.llm, run.tok, run.chunks[c], run.groups[c], args.k, base, args, log
            ),
        )
    done = done_chunks(journal, len(run.chunks), ["base", "curve"])
    if not done:
        print("no chunk finished yet")
        return
    base = gathered(journal, done, "base")
    curve = gathered(journal, done, "curve")
    both = [c for c in done if f"{c}/repeat" in journal.done]
    against = (
        (gathered(journal, both, "curve"), gathered(journal, both, "repeat")) if both else None
    )
    n = len(base["hit_none"])
    partial = f" **Partial: {n} of {len(run.items)} paragraphs.**" if n < len(run.items) else ""
    publish(
        args,
        "recon-curve",
        "Reader oracle, answers along the repeat fit",
        f"`benchmarks/recon_curve.py --checks {','.join(map(str, args.checks))}` — "
        f"{machine_line()}; `sibling_oracle.py`'s paragraphs (SQuAD v2 dev, evaluation-only "
        f"data, nothing trained; cut to {args.length} tokens, 1 + {args.siblings} questions "
        f"each, answers in the cut and overlapping none of the others') and its repeat arm: "
        f"each paragraph's vectors fitted alone from `{args.init}`'s states at ×{args.k} to "
        f"repeat it, Adam lr {args.lr} × their RMS, no question seen; read at each step "
        f"listed. Greedy: the first gold answer contained in 32 tokens. Paired: right only "
        f"with the vectors / only with the other (sign-test p).{partial}",
        report(base, curve, args.checks, args.k, against),
    )


if __name__ == "__main__":
    main()

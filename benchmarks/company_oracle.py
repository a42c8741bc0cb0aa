"""Are ×k vectors that repeat a paragraph still answered from when other paragraphs share the
context? The repeat fit, read in company.

    .venv/bin/python benchmarks/company_oracle.py [--others 1,3]
        [sibling_oracle.py's settings] [--report-only] [--no-write]

`recon_curve.py` found that vectors fitted to repeat a SQuAD paragraph at ×4 (no question
seen) are answered at about 0.43 of raw text's count once they close ~60% of the
reconstruction gap, each paragraph read *alone*. `eval qa` reads the top 4 chunks, and on
HotpotQA (two gold paragraphs per question) the same fit was answered at 0.15 of raw's. This
script takes the sibling oracle's items, settings and journal, fits the repeat arm again (the
same deterministic fit, `--steps` steps: at 40 it is the repeat arm, and the report checks its
NLLs against the journal's), and reads every question of each paragraph (the held-out one and
its siblings, all unseen by the fit) with its own vectors among `n` other paragraphs' vectors
for each n of `--others`: the next n paragraphs of its chunk, the own one at position
i mod (n + 1) for the chunk's i-th paragraph, so every position holds the answer equally
often. Raw text gets the same contexts (the paragraphs as cut), so every row pairs with raw
text in the same company; no context is the sibling oracle's.

The reading (docs/training.md "What next" 19), written before the run. In a company of n
others the vectors *qualify* when they answer, pooled over every question, at least 40% of
raw text's count in the same company and beat no context with a paired sign test at p < 0.05:
(m) company keeps the answers: they qualify with 1 and with 3 others;
(n) company costs them, more with more: they qualify with 1 other but not with 3;
(o) any company costs them: they qualify with neither.
(With one other qualifying only at 3, said so, and read as (m) at 3.)
Writes section `company-oracle` of docs/training.md; each chunk's piece goes into the sibling
oracle's journal as `<chunk>/company`, and a rerun resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_runs import paired, paired_cell
from reader_oracle import (
    done_chunks,
    fit,
    gathered,
    paragraph_states,
    publish,
    recon_baselines,
    tokenizer_users,
)
from recon_curve import BAR, owners, pooled  # BAR: here a share of raw's in the same company
from report import machine_line
from sibling_oracle import AnswerChunk, SiblingItem, add_arguments, open_run

from extok_rag.evaluation.journal import Journal
from extok_rag.models.ask_frame import ask_frame
from extok_rag.training.answer_probe import greedy_hits


def in_company(parts: list, i: int, others: int) -> list:
    """Paragraph i's part among the next `others` paragraphs' parts (cyclic), the own one at
    position i mod (others + 1)."""
    n = len(parts)
    company = [parts[(i + j) % n] for j in range(1, others + 1)]
    at = i % (others + 1)
    return [*company[:at], parts[i], *company[at:]]


def context_reads(llm, items: list[SiblingItem], contexts: list[list]) -> dict[str, list]:
    """Greedy answers to each paragraph's held-out question and its siblings, paragraph i's
    questions reading `contexts[i]` (its parts: text or vectors)."""
    held, held_users, sibs, sib_users = [], [], [], []
    for item, context in zip(items, contexts, strict=True):
        held.append(item.held_out)
        held_users.append(ask_frame(item.held_out.question, context))
        for ex in item.siblings:
            sibs.append(ex)
            sib_users.append(ask_frame(ex.question, context))
    return {"hit": greedy_hits(llm, held, held_users), "sib_hit": greedy_hits(llm, sibs, sib_users)}


def company_reads(llm, items: list[SiblingItem], parts: list, others: int) -> dict[str, list]:
    """`context_reads` with each paragraph's part among the next `others` (`in_company`)."""
    return context_reads(llm, items, [in_company(parts, i, others) for i in range(len(items))])


def company_arm(
    llm, tok, chunk: AnswerChunk, items, k: int, base, args, log, save: Path | None = None
) -> dict:
    """The repeat arm's fit, then every question in each company, with the fitted vectors and
    with raw text. `save`: where the fitted vectors go (a list of (n/k, d) float32 tensors, one
    per paragraph), so later reads need no fit."""
    if len(items) <= max(args.others):
        raise ValueError(f"a chunk of {len(items)} paragraphs has no {max(args.others)} others")
    users = tokenizer_users(llm, tok, chunk.repeats, chunk.length, k)
    states = paragraph_states(users)
    fitted = fit(
        llm, chunk.repeats, users, args.steps, args.lr, args.steps, recon_baselines(base), log
    )
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        torch.save([t.detach().clone() for t in states], save)
    out = {"nll_end": fitted["nll_end"], "gap": fitted["gap"]}
    for n in args.others:
        for name, parts in (("vectors", states), ("raw", chunk.paragraphs)):
            reads = company_reads(llm, items, parts, n)
            out |= {f"{key}_{name}_{n}": v for key, v in reads.items()}
        log(f"{n} others read")
    return out


def vectors_path(journal: Journal, c: int) -> Path:
    """Where chunk c's repeat-fitted vectors are kept, beside the journal."""
    return journal.path.parent / f"{journal.path.stem}-repeat-vectors" / f"chunk{c}.pt"


def alone_answers(repeat: dict) -> list[bool]:
    """The repeat arm's answers, each paragraph's own vectors read alone, in `pooled`'s order
    (its held-out key is `hit_own`, its siblings' `sib_hit`)."""
    return list(repeat["hit_own"]) + list(repeat["sib_hit"])


def qualifies(vectors: list[bool], raw: list[bool], none: list[bool]) -> bool:
    return sum(vectors) >= BAR * sum(raw) and paired(vectors, none)[2] < 0.05


def verdict(with_one: bool, with_three: bool) -> str:
    """The rule on whether the vectors qualify with 1 and with 3 others."""
    if with_one and with_three:
        return "(m): company keeps the answers, with 1 other and with 3"
    if with_one:
        return "(n): company costs them, more with more: they qualify with 1 other, not with 3"
    if with_three:
        return "(m) at 3 others: they qualify with 3 others but not with 1"
    return "(o): any company costs them: they qualify with neither 1 other nor 3"


def positions(paragraphs: int, siblings: int, chunk: int, others: int) -> list[int]:
    """Per pooled question (`pooled`'s order), the own paragraph's position in its context
    with `others` others (`in_company`: paragraph i of its chunk at i mod (others + 1))."""
    order = list(range(chunk))
    return [
        in_company(order, p % chunk, others).index(p % chunk) for p in owners(paragraphs, siblings)
    ]


def position_lines(company: dict, others: list[int], chunk: int, siblings: int) -> list[str]:
    """Descriptive: right answers by the own paragraph's position, vectors and raw text."""
    lines = [
        "| own paragraph's position | questions | vectors | raw text |",
        "|---|---:|---:|---:|",
    ]
    for m in others:
        vec, raw = pooled(company, f"_vectors_{m}"), pooled(company, f"_raw_{m}")
        at = positions(len(company[f"hit_vectors_{m}"]), siblings, chunk, m)
        for pos in range(m + 1):
            picked = [i for i, a in enumerate(at) if a == pos]
            lines.append(
                f"| with {m} other{'s' if m > 1 else ''}: {pos + 1} of {m + 1} | {len(picked)} | "
                f"{sum(vec[i] for i in picked)} | {sum(raw[i] for i in picked)} |"
            )
    return lines


def report(
    base: dict, company: dict, repeat: dict, others: list[int], k: int, chunk: int, siblings: int
) -> list[str]:
    """Counts alone and in each company, paired cells, the rule, the fit's check, and the
    answers by the own paragraph's position."""
    none = pooled(base, "_none")
    alone_raw = pooled(base, "_raw")
    alone = alone_answers(repeat)
    n, n_held = len(none), len(base["hit_none"])
    lines = [
        f"| ×{k}, every question ({n}) | raw text | repeat-fitted vectors | share of raw's | "
        f"vectors paired with none ({sum(none)}) | vectors paired with raw text | "
        f"held-out only ({n_held}): vectors / raw |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines.append(
        f"| alone (the repeat arm) | {sum(alone_raw)} | {sum(alone)} | "
        f"{sum(alone) / max(1, sum(alone_raw)):.2f} | {paired_cell(alone, none)} | "
        f"{paired_cell(alone, alone_raw)} | {sum(repeat['hit_own'])} / {sum(base['hit_raw'])} |"
    )
    passed, pairs = {}, []
    for m in others:
        vec, raw = pooled(company, f"_vectors_{m}"), pooled(company, f"_raw_{m}")
        passed[m] = qualifies(vec, raw, none)
        lines.append(
            f"| with {m} other{'s' if m > 1 else ''} | {sum(raw)} | {sum(vec)} | "
            f"{sum(vec) / max(1, sum(raw)):.2f} | {paired_cell(vec, none)} | "
            f"{paired_cell(vec, raw)} | {sum(company[f'hit_vectors_{m}'])} / "
            f"{sum(company[f'hit_raw_{m}'])} |"
        )
        pairs += [
            f"| vectors: with {m} / alone | {paired_cell(vec, alone)} |",
            f"| raw text: with {m} / alone | {paired_cell(raw, alone_raw)} |",
        ]
    lines += [
        "",
        "| right only the first / only the second | paired (sign-test p) |",
        "|---|---:|",
        *pairs,
    ]
    if 1 in passed and 3 in passed:
        lines += ["", f"Rule (What next 19): {verdict(passed[1], passed[3])}."]
    same = company["nll_end"] == repeat["nll_end"]
    lines.append(
        "The fit against `sibling_oracle.py`'s repeat arm: "
        + ("every repeat NLL the same." if same else "**the NLLs differ**.")
    )
    return [*lines, "", *position_lines(company, others, chunk, siblings)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--others", default="1,3")
    args = parser.parse_args()
    args.others = sorted({int(s) for s in args.others.split(",")})
    if args.others[0] < 1 or args.others[-1] >= args.chunk:
        parser.error(f"--others: from 1 to --chunk − 1 ({args.chunk - 1})")
    run = open_run(args)
    journal = run.journal
    if not args.report_only:
        run.resume(
            ["company"],
            args.k,
            lambda _, c, base, log: company_arm(
                run.llm,
                run.tok,
                run.chunks[c],
                run.groups[c],
                args.k,
                base,
                args,
                log,
                vectors_path(journal, c),
            ),
        )
    done = done_chunks(journal, len(run.chunks), ["base", "company", "repeat"])  # paired
    if not done:
        print("no chunk finished here and by sibling_oracle.py's repeat arm yet")
        return
    base = gathered(journal, done, "base")
    company = gathered(journal, done, "company")
    repeat = gathered(journal, done, "repeat")
    n = len(base["hit_none"])
    partial = f" **Partial: {n} of {len(run.items)} paragraphs.**" if n < len(run.items) else ""
    publish(
        args,
        "company-oracle",
        "Reader oracle, repeat-fitted vectors in company",
        f"`benchmarks/company_oracle.py --others {','.join(map(str, args.others))}` — "
        f"{machine_line()}; `sibling_oracle.py`'s paragraphs (SQuAD v2 dev, evaluation-only "
        f"data, nothing trained; cut to {args.length} tokens, 1 + {args.siblings} questions "
        f"each) and its repeat arm: each paragraph's vectors fitted alone from `{args.init}`'s "
        f"states at ×{args.k} to repeat it, Adam lr {args.lr} × their RMS, {args.steps} steps, "
        f"no question seen; then every question read with its own vectors among the next n "
        f"paragraphs' of its chunk (own at position i mod (n + 1)), and raw text in the same "
        f"company. Greedy: the first gold answer contained in 32 tokens. Paired: right only "
        f"with the first / only with the second (sign-test p).{partial}",
        report(base, company, repeat, args.others, args.k, args.chunk, args.siblings),
    )


if __name__ == "__main__":
    main()

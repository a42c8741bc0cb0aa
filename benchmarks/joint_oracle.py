"""Are ×k vectors fitted to repeat several paragraphs *together* answered from in company?
The recipe's reconstruction form, read in the top-4 frame.

    .venv/bin/python benchmarks/joint_oracle.py [--size 4]
        [sibling_oracle.py's settings] [--report-only] [--no-write]

`company_oracle.py` found that vectors fitted to repeat one SQuAD paragraph *alone* (item 17's
repeat arm) lose their answers in company: 0.43 of raw text's count read alone, 0.27 among one
other paragraph's vectors, 0.11 among three (the top-4 frame `eval qa` reads). The GPU recipe
does not fit alone: its reconstruction rows compress 1 to 3 paragraphs and repeat them all in
order (`recon_chunks`). This script fits that form: each chunk's paragraphs in groups of
`--size`, each group's vectors (from the tokenizer's states, as the repeat arm's) fitted
jointly by Adam to repeat the whole group, no question seen, the same steps and lr. Then every
question of each paragraph (held-out and siblings, none seen by any fit) is read in its group,
the own paragraph at position i mod size, so every position holds the answer equally often:
- *joint*: the group's jointly fitted vectors;
- *alone*: the group's alone-fitted vectors (the ones `company_oracle.py` kept, so only the
  chunks it kept are run: 1 to 5);
- *mixed*: the own alone-fitted vectors among the other paragraphs as raw text (company of
  text, not of vectors, as expand's compressed rest sits among raw spans);
- *raw*: the group as raw text.

The reading (docs/training.md "What next" 20), written before the run, at --size 4. The joint
vectors *qualify* when they answer, pooled over every question, at least 40% of raw text's
count in the same group and beat no context with a paired sign test at p < 0.05:
(p) joint fitting restores the answers: they qualify. Then the recipe's reconstruction form
    carries the ×4 answer target into the top-4 frame, and `recon_chunks` should reach 4;
(q) it helps, not enough: they do not qualify but beat the alone-fitted vectors in the same
    groups, paired, p < 0.05. `recon_chunks` should still reach 4 (the form that helps), and
    the answer objectives must carry the rest;
(r) it does not help: neither. Reconstruction, alone or joint, does not carry the ×4 answer
    target in company on this reader; nothing in the recipe changes.
And on *mixed* against *alone*: (s) vectors among vectors cost more than vectors among text,
if mixed beats alone paired at p < 0.05; (t) any company costs them, otherwise.
Writes section `joint-oracle` of docs/training.md; each chunk's piece goes into the sibling
oracle's journal as `<chunk>/joint<size>`, and a rerun resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from company_oracle import alone_answers, context_reads, qualifies, vectors_path
from paired_runs import paired, paired_cell
from reader_oracle import done_chunks, fit, gathered, publish, repeat_baselines, tokenizer_users
from recon_curve import BAR, owners, pooled
from report import machine_line
from sibling_oracle import AnswerChunk, add_arguments, open_run

from extok_rag.training.frame import reconstruction_example

READS = ("joint", "alone", "mixed", "raw")


def in_group(parts: list, i: int, size: int) -> list:
    """Paragraph i's group of `size` (in order; the own one at position i mod size)."""
    start = i - i % size
    return parts[start : start + size]


def mixed(vectors: list, texts: list, i: int, size: int) -> list:
    """Paragraph i's group (`in_group`) with its own vectors and the others' raw text."""
    group = in_group(texts, i, size)
    group[i % size] = vectors[i]
    return group


def joint_fit(llm, tok, chunk: AnswerChunk, size: int, k: int, steps: int, lr: float, log):
    """Each group of `size` paragraphs' vectors, from the tokenizer's states at k, fitted
    together to repeat the group in order: (the fit's record, the vectors per paragraph)."""
    groups = [chunk.paragraphs[i : i + size] for i in range(0, len(chunk.paragraphs), size)]
    examples = [reconstruction_example(g) for g in groups]
    users = tokenizer_users(llm, tok, examples, chunk.length, k)
    baselines = repeat_baselines(llm, examples, chunk.length)
    fitted = fit(llm, examples, users, steps, lr, steps, baselines, log)
    return fitted, [p for u in users for p in u if torch.is_tensor(p)]


def joint_arm(llm, tok, chunk: AnswerChunk, items, k: int, size: int, alone, args, log) -> dict:
    """The joint fit, then every question read in its group four ways (`READS`). `alone`: the
    chunk's alone-fitted vectors, one per paragraph."""
    if len(items) % size or len(alone) != len(items):
        raise ValueError(f"{len(items)} paragraphs and {len(alone)} vectors in groups of {size}")
    fitted, joint = joint_fit(llm, tok, chunk, size, k, args.steps, args.lr, log)
    texts, n = chunk.paragraphs, len(items)
    contexts = {
        "joint": [in_group(joint, i, size) for i in range(n)],
        "alone": [in_group(alone, i, size) for i in range(n)],
        "mixed": [mixed(alone, texts, i, size) for i in range(n)],
        "raw": [in_group(texts, i, size) for i in range(n)],
    }
    out = {key: fitted[key] for key in ("gap", "nll_end", "whole", "greedy_f1", "seconds")}
    for name, context in contexts.items():
        out |= {f"{key}_{name}": v for key, v in context_reads(llm, items, context).items()}
        log(f"{name} read")
    return out


def verdict(joint: list[bool], alone: list[bool], raw: list[bool], none: list[bool]) -> str:
    """The rule on the joint vectors, against raw text, none and the alone-fitted ones."""
    if qualifies(joint, raw, none):
        return "(p): joint fitting restores the answers (the joint vectors qualify)"
    if paired(joint, alone)[2] < 0.05 and sum(joint) > sum(alone):
        return "(q): joint fitting helps, not enough (ahead of alone-fitted, not qualifying)"
    return "(r): joint fitting does not help (neither qualifying nor ahead of alone-fitted)"


def mixed_verdict(mix: list[bool], alone: list[bool]) -> str:
    if paired(mix, alone)[2] < 0.05 and sum(mix) > sum(alone):
        return "(s): vectors among vectors cost more than vectors among text"
    return "(t): any company costs them (among text no better than among vectors)"


def positions(paragraphs: int, siblings: int, size: int) -> list[int]:
    """Per pooled question (`pooled`'s order), the own paragraph's position in its group."""
    return [p % size for p in owners(paragraphs, siblings)]


def report(base: dict, joint: dict, repeat: dict, gaps: dict, size: int, k: int, siblings: int):
    """Counts in the groups, paired cells, the rules, the fits' gaps, answers by position."""
    none, rows = pooled(base, "_none"), {name: pooled(joint, f"_{name}") for name in READS}
    alone_read = alone_answers(repeat)
    raw = sum(rows["raw"])
    label = {
        "joint": "jointly fitted vectors (the group repeated together)",
        "alone": "alone-fitted vectors (each paragraph repeated alone)",
        "mixed": "own alone-fitted vectors, the others raw text",
        "raw": "raw text",
    }
    lines = [
        f"| ×{k}, in groups of {size}, every question ({len(none)}) | answers | "
        f"share of raw text's | paired with none ({sum(none)}) | paired with alone-fitted |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in READS:
        hits = rows[name]
        against = "—" if name == "alone" else paired_cell(hits, rows["alone"])
        lines.append(
            f"| {label[name]} | {sum(hits)} | {sum(hits) / max(1, raw):.2f} | "
            f"{paired_cell(hits, none)} | {against} |"
        )
    lines += [
        f"| alone-fitted vectors read alone (the repeat arm; raw text alone "
        f"{sum(pooled(base, '_raw'))}) | {sum(alone_read)} | — | {paired_cell(alone_read, none)} "
        f"| {paired_cell(alone_read, rows['alone'])} |",
        "",
        f"Rule (What next 20): {verdict(rows['joint'], rows['alone'], rows['raw'], none)}; "
        f"{mixed_verdict(rows['mixed'], rows['alone'])}. (Bar: {BAR:.0%} of raw text's "
        f"{raw} is {BAR * raw:.1f}.)",
        f"Reconstruction gap closed, mean over chunks: joint {gaps['joint']:.1%}, alone "
        f"{gaps['alone']:.1%}; groups repeated whole (greedy) {sum(joint['whole'])} of "
        f"{len(joint['whole'])}.",
        "",
        "| own paragraph's position | questions | " + " | ".join(READS) + " |",
        "|---|---:|" + "---:|" * len(READS),
    ]
    at = positions(len(base["hit_none"]), siblings, size)
    for pos in range(size):
        picked = [i for i, a in enumerate(at) if a == pos]
        counts = " | ".join(str(sum(rows[name][i] for i in picked)) for name in READS)
        lines.append(f"| {pos + 1} of {size} | {len(picked)} | {counts} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--size", type=int, default=4)
    args = parser.parse_args()
    if args.size < 2 or args.chunk % args.size:
        parser.error(f"--size: at least 2 and a divisor of --chunk ({args.chunk})")
    run = open_run(args)
    journal, piece = run.journal, f"joint{args.size}"
    kept = [c for c in range(len(run.chunks)) if vectors_path(journal, c).exists()]
    if not args.report_only:
        run.resume(
            [piece],
            args.k,
            lambda _, c, base, log: joint_arm(
                run.llm,
                run.tok,
                run.chunks[c],
                run.groups[c],
                args.k,
                args.size,
                torch.load(vectors_path(journal, c)),
                args,
                log,
            ),
            kept,
        )
    done = done_chunks(journal, len(run.chunks), ["base", piece, "repeat"])
    if not done:
        print("no chunk finished here and by sibling_oracle.py's repeat arm yet")
        return
    gaps = {
        name: sum(journal.done[f"{c}/{p}"]["gap"] for c in done) / len(done)
        for name, p in (("joint", piece), ("alone", "repeat"))
    }
    base, joint = gathered(journal, done, "base"), gathered(journal, done, piece)
    partial = f" **Partial: {len(done)} of {len(kept)} chunks.**" if len(done) < len(kept) else ""
    publish(
        args,
        "joint-oracle",
        "Reader oracle, vectors fitted together and read in company",
        f"`benchmarks/joint_oracle.py --size {args.size}` — {machine_line()}; "
        f"`sibling_oracle.py`'s paragraphs (SQuAD v2 dev, evaluation-only data, nothing "
        f"trained; cut to {args.length} tokens, 1 + {args.siblings} questions each), chunks "
        f"{', '.join(map(str, done))} (those whose alone-fitted vectors `company_oracle.py` "
        f"kept): each group of {args.size} paragraphs' vectors fitted together from "
        f"`{args.init}`'s states at ×{args.k} to repeat the group, Adam lr {args.lr} × their "
        f"RMS, {args.steps} steps, no question seen; every question read in its group (own at "
        f"position i mod {args.size}). Greedy: the first gold answer contained in 32 tokens. "
        f"Paired: right only with the first / only with the second (sign-test p).{partial}",
        report(
            base,
            joint,
            gathered(journal, done, "repeat"),
            gaps,
            args.size,
            args.k,
            args.siblings,
        ),
    )


if __name__ == "__main__":
    main()

"""The reader oracle with a paragraph's other questions: do ×k vectors fitted to *answer* some
questions about a paragraph let the frozen LLM answer a question they were not fitted on?

    .venv/bin/python benchmarks/sibling_oracle.py [--items 48] [--k 4] [--siblings 4]
        [--steps 40] [--length 160] [--chunk 8] [--report-only] [--no-write]

`reader_oracle.py --answers` fits each paragraph's vectors (from the tokenizer's states) to
repeat it, or to repeat it and fill blanks in it, the question unseen: at ×4 those vectors
answer 3 and 6 of 48 HotpotQA questions (raw text 20). SQuAD gives a paragraph several real
questions, so this script asks what a writer trained in the answer frame could at best give
a question it has not seen. Each item is a SQuAD paragraph (cut to `--length` tokens) with
1 + `--siblings` answerable questions whose answers lie in the cut and share no answer
(normalised, either contained in the other): the first in file order is held out, the others
are the siblings. Two arms, each fitted per paragraph from the tokenizer's ×k states, Adam lr
`--lr` × their RMS, `--steps` steps, the LLM frozen:
    repeat           the paragraph's repeat row alone (as `reader_oracle.py`)
    repeat+siblings  the repeat row and the siblings' answer rows, reading the same vectors
                     (the two sets' mean losses added, as `reader_oracle.fit` adds blanks)
Then every question is read greedily: the held-out one (unseen by both arms) with its own
paragraph's vectors, with the next item's ("other"), with none and with the raw text; the
siblings with each arm's vectors (seen by the second arm only), none and raw text.

The reading (docs/training.md "What next" 17), written before the run:
(g) answer-shaped vectors carry what this reader answers from: the siblings arm answers the
    held-out questions greedily at ≥ 40% of raw text's count and beats no context with
    sign-test p < 0.05;
(h) shortcuts, not content: the siblings arm answers its siblings at ≥ 40% of raw text's count
    on them, but the held-out questions under 40% of raw's;
(i) the fit failed: the siblings arm answers under 40% of raw's count on its own siblings
    (nothing is said about held-out questions then);
and beside them, paired on the held-out questions: siblings against repeat.
SQuAD is evaluation-only data; nothing here is kept beyond the journal and the section (no
weights are trained: each paragraph's vectors exist for its own fit and reading).
Writes section `sibling-oracle` of docs/training.md; a journal
(`<home>/eval-runs/sibling-oracle/`) keeps each chunk's baselines and arms, and a rerun
resumes where it stopped.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_runs import paired_cell
from reader_oracle import (
    AnswerChunk,
    answer_gaps,
    chunk_base,
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

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import RuntimeConfig, fastest_dtype
from extok_rag.datasets.qa_sets import QAItem, answer_contained, squad_questions
from extok_rag.evaluation.journal import Journal
from extok_rag.models.ask_frame import ask_frame
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM
from extok_rag.training.answer_probe import greedy_hits
from extok_rag.training.frame import (
    FrameExample,
    frame_users,
    reconstruction_example,
    truncate_text,
)
from extok_rag.training.setup import init_path

ARMS = ("repeat", "siblings")
SEED = 20261207  # the order paragraphs are taken in


@dataclass(frozen=True)
class SiblingItem:
    """A paragraph as cut, its held-out question and the questions the second arm fits on."""

    paragraph: str
    held_out: FrameExample
    siblings: tuple[FrameExample, ...]


def share_answer(a: str, b: str) -> bool:
    """Whether two answers overlap: either, normalised, contained in the other."""
    return answer_contained(a, [b]) or answer_contained(b, [a])


def sibling_items(
    llm, paragraphs: dict[str, str], questions, n: int, siblings: int, length: int
) -> list[SiblingItem]:
    """Up to n items, paragraphs in a seeded order: each paragraph cut to `length` tokens, its
    questions in file order whose first answer lies in the cut and overlaps no earlier kept
    one's; the first kept is held out, the next `siblings` are its siblings."""
    by_doc: dict[str, list[QAItem]] = defaultdict(list)
    for q in questions:
        by_doc[q.gold_docs[0]].append(q)
    docs = sorted(d for d, qs in by_doc.items() if len(qs) > siblings)
    random.Random(SEED).shuffle(docs)
    items: list[SiblingItem] = []
    for doc in docs:
        if len(items) == n:
            break
        text = truncate_text(llm, paragraphs[doc], length)
        kept: list[QAItem] = []
        for q in by_doc[doc]:
            answer = q.answers[0]
            if answer_contained(text, [answer]) and not any(
                share_answer(answer, k.answers[0]) for k in kept
            ):
                kept.append(q)
        if len(kept) > siblings:
            held, *sibs = (FrameExample((text,), q.question, q.answers[0]) for q in kept)
            items.append(SiblingItem(text, held, tuple(sibs[:siblings])))
    return items


def answer_chunk(items: list[SiblingItem], length: int) -> AnswerChunk:
    """`reader_oracle`'s chunk: the held-out questions, one paragraph each."""
    return AnswerChunk(
        [it.held_out for it in items],
        [it.paragraph for it in items],
        [reconstruction_example([it.paragraph]) for it in items],
        [1] * len(items),
        length,
    )


def sibling_rows(items: list[SiblingItem], states: list[torch.Tensor]) -> tuple[list, list]:
    """(examples, users): each sibling question reading its paragraph's tensor."""
    examples, users = [], []
    for item, state in zip(items, states, strict=True):
        for ex in item.siblings:
            examples.append(ex)
            users.append(ask_frame(ex.question, [state]))
    return examples, users


def sibling_base(llm, tok, chunk: AnswerChunk, items: list[SiblingItem], k: int) -> dict:
    """`reader_oracle.chunk_base` for the held-out questions, and the siblings' greedy answers
    with no context and with the raw text."""
    sibs = [s for it in items for s in it.siblings]
    return {
        **chunk_base(llm, tok, chunk, k),
        "sib_hit_none": greedy_hits(llm, sibs, frame_users(llm, sibs, 0)),
        "sib_hit_raw": greedy_hits(llm, sibs, frame_users(llm, sibs, chunk.length)),
    }


def sibling_arm(llm, tok, chunk, items, k: int, arm: str, base: dict, steps: int, lr: float, log):
    """Each paragraph's vectors from the tokenizer's states at k, fitted to repeat it (and,
    for "siblings", to answer its siblings); then every question read greedily."""
    users = tokenizer_users(llm, tok, chunk.repeats, chunk.length, k)
    states = paragraph_states(users)
    extra = sibling_rows(items, states)
    baselines = recon_baselines(base)
    rows = extra if arm == "siblings" else ((), ())
    fitted = fit(llm, chunk.repeats, users, steps, lr, steps, baselines, log, rows)
    return {
        **fitted,
        **chunk.read_states(llm, states),
        "sib_hit": greedy_hits(llm, *extra),
    }


def report(base: dict, arms: dict[str, dict], k: int) -> list[str]:
    """Totals over the items done, then the held-out questions paired."""
    n, n_sib = len(base["hit_none"]), len(base["sib_hit_none"])
    raw_held, raw_sib = sum(base["hit_raw"]), sum(base["sib_hit_raw"])

    def content(cells, suffix=""):
        own, other = answer_gaps(base, cells, suffix)
        return f"{own:.1%} / {other:.1%} ({own - other:+.1%})"

    lines = [
        f"| ×{k}, {n} paragraphs | reconstruction gap | held-out answer gap own / other "
        f"(own − other) | held-out greedy own / other ({n}) | siblings greedy ({n_sib}) |",
        "|---|---:|---:|---:|---:|",
        f"| no context / raw text | — | — | {sum(base['hit_none'])} / {raw_held} | "
        f"{sum(base['sib_hit_none'])} / {raw_sib} |",
        f"| the tokenizer's states | {recon_gap(base, arms['repeat']['nll_start']):.1%} | "
        f"{content(base, '_tokenizer')} | {sum(base['hit_own_tokenizer'])} / "
        f"{sum(base['hit_other_tokenizer'])} | — |",
    ]
    labels = {"repeat": "fitted to repeat", "siblings": "fitted to repeat and answer the siblings"}
    for arm, cells in arms.items():
        lines.append(
            f"| {labels[arm]} | {recon_gap(base, cells['nll_end']):.1%} | {content(cells)} | "
            f"{sum(cells['hit_own'])} / {sum(cells['hit_other'])} | {sum(cells['sib_hit'])} |"
        )
    sib, rep = arms["siblings"], arms["repeat"]
    sib_share, rep_share = (sum(a["hit_own"]) / max(1, raw_held) for a in (sib, rep))

    def pair(label: str, first: list, second: list, share: float) -> str:
        return f"| {label} | {paired_cell(first, second)} | {share:.2f} |"

    lines += [
        "",
        "| greedy: right only the first / only the second | paired (sign-test p) | "
        "share of raw's (first) |",
        "|---|---:|---:|",
        pair("held-out: siblings arm / no context", sib["hit_own"], base["hit_none"], sib_share),
        pair("held-out: siblings arm / repeat arm", sib["hit_own"], rep["hit_own"], sib_share),
        pair("held-out: repeat arm / no context", rep["hit_own"], base["hit_none"], rep_share),
        pair("held-out: repeat arm / raw text", rep["hit_own"], base["hit_raw"], rep_share),
        pair(
            "siblings (seen): siblings arm / repeat arm",
            sib["sib_hit"],
            rep["sib_hit"],
            sum(sib["sib_hit"]) / max(1, raw_sib),
        ),
    ]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's settings (each in the journal's key) and the output switches."""
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--siblings", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--length", type=int, default=160)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--init", default="shipped", help="a tokenizer checkpoint or 'shipped'")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-write", action="store_true")


@dataclass
class Run:
    """The loaded models, the items in chunks, and the journal their pieces go to."""

    llm: FrozenLLM
    tok: ExtensibleTokenizer
    items: list[SiblingItem]
    groups: list[list[SiblingItem]]
    chunks: list[AnswerChunk]
    journal: Journal

    def base(self, c: int, k: int) -> dict:
        """Chunk c's baselines, from the journal or measured and journalled."""
        if f"{c}/base" not in self.journal.done:
            self.journal.record(
                f"{c}/base", sibling_base(self.llm, self.tok, self.chunks[c], self.groups[c], k)
            )
        return self.journal.done[f"{c}/base"]

    def resume(self, pieces: list[str], k: int, arm, chunks=None) -> None:
        """Chunk by chunk (all, or those of `chunks`), each of `pieces` the journal lacks:
        `arm(piece, c, base, log)` measured and recorded as it finishes (a killed run resumes
        at the piece in flight)."""
        for c in range(len(self.chunks)) if chunks is None else chunks:
            for piece in pieces:
                if f"{c}/{piece}" in self.journal.done:
                    continue
                log = lambda m, c=c, piece=piece: print(f"chunk {c} {piece}: {m}", flush=True)  # noqa: E731
                self.journal.record(f"{c}/{piece}", arm(piece, c, self.base(c, k), log))


def open_run(args) -> Run:
    """Load the LLM and tokenizer, build the items and open the journal of these settings."""
    quiet_transformers()
    torch.manual_seed(0)
    llm = FrozenLLM.load(None, RuntimeConfig(device="auto", dtype=fastest_dtype("cpu")))
    tok = ExtensibleTokenizer.from_pretrained(init_path(args.init), llm).eval()
    items = sibling_items(llm, *squad_questions(), args.items, args.siblings, args.length)
    settings = {
        **{n: getattr(args, n) for n in ("k", "siblings", "steps", "lr", "length", "chunk")},
        "init": args.init,
        "dtype": str(llm.dtype),
        "version": 1,
    }
    journal = Journal.open("sibling-oracle", settings)
    print(f"journal {journal.path} ({len(journal.done)} pieces done)", flush=True)
    groups = [items[i : i + args.chunk] for i in range(0, len(items), args.chunk)]
    chunks = [answer_chunk(g, args.length) for g in groups]
    return Run(llm, tok, items, groups, chunks, journal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    args = parser.parse_args()
    run = open_run(args)
    journal = run.journal
    if not args.report_only:
        run.resume(
            list(ARMS),
            args.k,
            lambda arm, c, base, log: sibling_arm(
                run.llm,
                run.tok,
                run.chunks[c],
                run.groups[c],
                args.k,
                arm,
                base,
                args.steps,
                args.lr,
                log,
            ),
        )
    done = done_chunks(journal, len(run.chunks), list(ARMS))
    if not done:
        print("no chunk finished yet")
        return
    base = gathered(journal, done, "base")
    arms = {a: gathered(journal, done, a) for a in ARMS}
    n = len(base["hit_none"])
    partial = f" **Partial: {n} of {len(run.items)} paragraphs.**" if n < len(run.items) else ""
    publish(
        args,
        "sibling-oracle",
        "Reader oracle, a paragraph's other questions",
        f"`benchmarks/sibling_oracle.py --items {args.items} --k {args.k} --siblings "
        f"{args.siblings} --steps {args.steps} --length {args.length}` — {machine_line()}; "
        f"SQuAD v2 dev paragraphs (evaluation-only data, nothing trained), each cut to "
        f"{args.length} tokens with one held-out question and {args.siblings} siblings whose "
        f"answers lie in the cut and overlap none of the others'; each paragraph's vectors "
        f"fitted alone from `{args.init}`'s states at ×{args.k}, Adam lr {args.lr} × their "
        f"RMS, {args.steps} steps, in chunks of {args.chunk}. Other: the next paragraph in its "
        f"chunk. Greedy: the first gold answer contained in 32 tokens.{partial}",
        report(base, arms, args.k),
    )


if __name__ == "__main__":
    main()

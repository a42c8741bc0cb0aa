"""The answer probe: does a compressed gold paragraph carry the *answer* to a question?

Held-out HotpotQA items (question, gold paragraphs, answer; `answer_probe.jsonl`, reserved by
`data prepare`: in no `eval qa` draw, never trained on). Each item's gold paragraphs are given
in the exact `ask` prompt frame as

    none    no context (the question alone)
    raw     the paragraphs' text
    k{k}    the paragraphs compressed by k

and the teacher-forced NLL of the answer tokens is measured. The headline number is the
*answer gap closed* at k: (NLL_none - NLL_k) / (NLL_none - NLL_raw), per answer token over all
items. With `greedy_items`, greedy accuracy on the first items too (teacher-forced NLL can fall
far while greedy answers stay wrong). With `other_k`, each question is also read over the next
item's paragraphs compressed (a gap closed there is format, not content) and, with greedy
accuracy on, beside them (`in_company`: the top-4 frame `eval qa` and `ask` read).

The reconstruction probe asks the same question of exact content: each item's first gold
paragraph, cut to `recon_len` tokens, is given none / raw / compressed and asked back with
"Repeat the context word for word."; its gap closed at k is the share of the paragraph's
tokens' none -> raw NLL gap that the compressed paragraph closes (raw: the LLM copies).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from extok_rag.config import DownscaleMethod
from extok_rag.datasets.qa_sets import answer_contained
from extok_rag.datasets.training_files import QAExample
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.generation import generate_batch
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import Row
from extok_rag.training.frame import (
    FrameExample,
    bare_rows,
    compressed_rows,
    frame_users,
    raw_rows,
    reconstruction_example,
    rotated,
    truncate_text,
)
from extok_rag.training.objective import ChunkLosses, row_losses
from extok_rag.training.probe import evaluating


def probe_examples(items: Sequence[QAExample]) -> list[FrameExample]:
    """The gold paragraphs in their supporting-fact order (no distractors)."""
    return [FrameExample(item.gold, item.question, item.answer) for item in items]


def in_company(examples: Sequence[FrameExample]) -> list[FrameExample]:
    """Each example's paragraphs beside the next example's (`rotated`'s pairing): its own
    first at even positions, last at odd ones, so the answer is read at either end."""
    return [
        replace(
            ex, contexts=ex.contexts + nxt.contexts if i % 2 == 0 else nxt.contexts + ex.contexts
        )
        for i, (ex, nxt) in enumerate(zip(examples, rotated(examples), strict=True))
    ]


@dataclass
class AnswerProbe:
    items: list[QAExample]
    ks: tuple[int, ...] = (2, 4, 8)
    context_len: int = 256
    method: DownscaleMethod = "strided"
    batch_size: int = 16
    _baselines: dict[str, ChunkLosses] = field(default_factory=dict)

    @classmethod
    def sample(cls, items: Sequence[QAExample], n: int, seed: int = 0, **kwargs) -> AnswerProbe:
        """The first n items of a seeded shuffle (the same n items for every run)."""
        chosen = list(items)
        random.Random(seed).shuffle(chosen)
        return cls(chosen[:n], **kwargs)

    greedy_items: int = 0  # >0: also greedy accuracy on the first n items (greedy_*)
    # >0: also each question over the *next* item's paragraphs compressed by this k
    # (nll_k{k}_other, gap_k{k}_other): a gap closed there is format, not content; with
    # greedy_items, also greedy answers in company at this k (greedy_k{k}_company)
    other_k: int = 0
    _greedy_baselines: dict[str, float] = field(default_factory=dict)

    @torch.no_grad()
    def run(self, llm: FrozenLLM, tokenizer: ExtensibleTokenizer) -> dict[str, float]:
        """Mean answer NLL per token by row (nll_none, nll_raw, nll_k{k}), the answer gap
        closed at each k (gap_k{k}), and with `greedy_items` the share of those items whose
        answer is in 32 greedy tokens (greedy_none, greedy_raw, greedy_k{k}): teacher-forced
        NLL can fall far while greedy answers stay wrong."""
        out = summarise(self.run_detailed(llm, tokenizer), self.ks)
        if self.other_k:
            out.update(self.other_summary(llm, tokenizer, out))
        if self.greedy_items:
            out.update(self.greedy(llm, tokenizer))
        return out

    @torch.no_grad()
    def greedy(self, llm: FrozenLLM, tokenizer: ExtensibleTokenizer) -> dict[str, float]:
        """Greedy accuracy on the first `greedy_items` items: none and raw (once per run), each
        k; with `other_k`, also each item's paragraphs beside the next item's (`in_company`, the
        top-4 frame, where vectors answered alone can fall to no context's level:
        docs/training.md, What next 19 and 20), raw and compressed by `other_k`."""
        examples = self.examples(llm)[: self.greedy_items]
        company = in_company(examples) if self.other_k and len(examples) > 1 else []
        if not self._greedy_baselines:
            self._greedy_baselines = {
                "greedy_none": greedy_accuracy(llm, examples, frame_users(llm, examples, 0)),
                "greedy_raw": self.greedy_read(llm, examples),
            }
            if company:
                self._greedy_baselines["greedy_raw_company"] = self.greedy_read(llm, company)
        out = dict(self._greedy_baselines)
        with evaluating(tokenizer):
            for k in self.ks:
                out[f"greedy_k{k}"] = self.greedy_read(llm, examples, tokenizer, k)
            if company:
                k = self.other_k
                out[f"greedy_k{k}_company"] = self.greedy_read(llm, company, tokenizer, k)
        return out

    def greedy_read(
        self,
        llm: FrozenLLM,
        examples: Sequence[FrameExample],
        tokenizer: ExtensibleTokenizer | None = None,
        k: int = 1,
    ) -> float:
        """`greedy_accuracy` with the examples' paragraphs raw (no tokenizer) or compressed by
        k, each cut to `context_len` tokens."""
        ks = [k] * len(examples) if tokenizer is not None else ()
        users = frame_users(llm, examples, self.context_len, tokenizer, ks, self.method)
        return greedy_accuracy(llm, examples, users)

    @torch.no_grad()
    def run_detailed(
        self, llm: FrozenLLM, tokenizer: ExtensibleTokenizer
    ) -> dict[str, ChunkLosses]:
        """Per-item summed answer NLL and answer-token counts by row name (none, raw, k{k})."""
        examples = self.examples(llm)
        if not self._baselines:
            self._baselines = {
                "none": self.losses(llm, bare_rows(llm, examples)),
                "raw": self.losses(llm, raw_rows(llm, examples, self.context_len)),
            }
        with evaluating(tokenizer):
            result = dict(self._baselines)
            for k in self.ks:
                result[f"k{k}"] = self.losses(llm, self.compressed(llm, tokenizer, examples, k))
        return result

    @torch.no_grad()
    def other_losses(self, llm: FrozenLLM, tokenizer: ExtensibleTokenizer) -> ChunkLosses:
        """Per-item answer NLL with each question over the next item's paragraphs (`rotated`,
        as the contrast loss reads them), compressed by `other_k`."""
        with evaluating(tokenizer):
            other = rotated(self.examples(llm))
            return self.losses(llm, self.compressed(llm, tokenizer, other, self.other_k))

    def other_summary(
        self, llm: FrozenLLM, tokenizer: ExtensibleTokenizer, summary: dict[str, float]
    ) -> dict[str, float]:
        """nll_k{other_k}_other and gap_k{other_k}_other, the gap against `summary`'s
        (`summarise`'s) none and raw NLL."""
        other = float(self.other_losses(llm, tokenizer).mean())
        gap = gap_closed(summary["nll_none"], summary["nll_raw"], other)
        return {f"nll_k{self.other_k}_other": other, f"gap_k{self.other_k}_other": gap}

    def compressed(
        self,
        llm: FrozenLLM,
        tokenizer: ExtensibleTokenizer,
        examples: Sequence[FrameExample],
        k: int,
    ) -> list[Row]:
        """The examples' rows with their paragraphs compressed by k, `batch_size` at a time."""
        rows = []
        for start in range(0, len(examples), self.batch_size):
            part = examples[start : start + self.batch_size]
            rows += compressed_rows(
                llm, tokenizer, part, [k] * len(part), self.context_len, self.method
            )
        return rows

    def examples(self, llm: FrozenLLM) -> list[FrameExample]:
        return probe_examples(self.items)

    def losses(self, llm: FrozenLLM, rows: list[Row]) -> ChunkLosses:
        parts = [
            row_losses(llm, rows[i : i + self.batch_size])
            for i in range(0, len(rows), self.batch_size)
        ]
        return ChunkLosses(
            torch.cat([p.nll for p in parts]).float(), torch.cat([p.count for p in parts])
        )


@dataclass
class ReconstructionProbe(AnswerProbe):
    """The answer probe's items' first gold paragraph, cut to `recon_len` tokens, repeated."""

    recon_len: int = 64
    context_len: int = field(init=False)  # the context is the paragraph to repeat: recon_len

    def __post_init__(self) -> None:
        self.context_len = self.recon_len

    def examples(self, llm: FrozenLLM) -> list[FrameExample]:
        return [
            reconstruction_example([truncate_text(llm, item.gold[0], self.recon_len)])
            for item in self.items
        ]


def greedy_texts(
    llm: FrozenLLM, users: Sequence, max_new_tokens: int = 32, batch: int = 8
) -> list[str]:
    """Each user turn's greedy reply (at most `max_new_tokens`), decoded, in batches."""
    rows = [llm.chat_row(user) for user in users]
    texts: list[str] = []
    for i in range(0, len(rows), batch):
        outputs = generate_batch(llm, rows[i : i + batch], max_new_tokens)
        texts += [llm.tokenizer.decode(ids, skip_special_tokens=True) for ids in outputs]
    return texts


def greedy_hits(
    llm: FrozenLLM, examples: Sequence[FrameExample], users: Sequence, batch: int = 8
) -> list[bool]:
    """Per example: is its answer contained in 32 greedy tokens after its user turn (SQuAD
    normalisation, as `eval qa` scores)?"""
    texts = greedy_texts(llm, users, 32, batch)
    return [answer_contained(t, [ex.answer]) for t, ex in zip(texts, examples, strict=True)]


def greedy_accuracy(
    llm: FrozenLLM, examples: Sequence[FrameExample], users: Sequence, batch: int = 8
) -> float:
    """Share of examples whose answer is contained in 32 greedy tokens (`greedy_hits`)."""
    return sum(greedy_hits(llm, examples, users, batch)) / max(1, len(users))


def gap_closed(none: float, raw: float, compressed: float) -> float:
    """Share of the none -> raw NLL gap that the compressed context closes."""
    return (none - compressed) / (none - raw) if none != raw else float("nan")


def summarise(losses: dict[str, ChunkLosses], ks: Sequence[int]) -> dict[str, float]:
    nll = {name: float(v.mean()) for name, v in losses.items()}
    out = {f"nll_{name}": value for name, value in nll.items()}
    for k in ks:
        out[f"gap_k{k}"] = gap_closed(nll["none"], nll["raw"], nll[f"k{k}"])
    return out

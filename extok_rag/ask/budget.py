"""Prompts under a position budget: `expand` (the best spans raw, the rest of every chunk as
extensible embeddings), and its two controls, `spans` (the best spans raw, nothing else) and
`truncated` (the raw chunks, cut where the budget ends). All three read the budget frame
(`PromptRequest.budget_row`: the light frame unless `AskConfig.frame` says otherwise) and pay
its slot for a chunk only when they read the chunk."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from extok_rag.ask.attention import attention_scores
from extok_rag.ask.prompt import Prompt, PromptRequest, question_only
from extok_rag.ask.retrieval import Retrieved
from extok_rag.config import k_choices
from extok_rag.errors import InputTooLongError
from extok_rag.models.mixed_input import Row, row_length
from extok_rag.spans import (
    Span,
    chunk_parts,
    chunk_spans,
    plan_expansion,
    score_spans,
    token_starts,
)


def scored_spans(req: PromptRequest) -> list[Span]:
    """Every retrieved chunk cut into spans at the text's own sentence starts (not snapped to
    the index's stride), scored against the question."""
    llm, stride = req.llm, req.stride
    spans = [
        span
        for i, c in enumerate(req.chunks)
        for span in chunk_spans(i, c.text, token_starts(llm.tokenizer, c.text, c.n_tokens), 1)
    ]
    return score_spans(
        req.cfg.scorer,
        req.embedder,
        req.question,
        spans,
        lambda: attention_scores(llm, req.question, req.chunks, spans, req.headers, stride),
    )


FrameCost = Callable[[frozenset[int]], int]  # the chunks read -> the frame's positions


def frame_costs(req: PromptRequest, offered: int) -> FrameCost:
    """The budget frame's positions by the set of chunks read, among the first `offered`
    (`PromptRequest.frame_positions`), each set measured once."""
    return functools.cache(lambda read: req.frame_positions(read, offered))


def truncated_prompt(req: PromptRequest) -> Prompt:
    """The raw chunks in rank order, the last one cut so the prompt fits the budget; a chunk's
    slot in the frame is paid when the chunk is read."""
    llm, frame = req.llm, frame_costs(req, len(req.chunks))
    contexts: list[str] = []
    used = 0  # content positions so far
    for i, chunk in enumerate(req.chunks):
        room = req.budget - frame(frozenset(range(i + 1))) - used
        if room <= 0:
            break
        ids = llm.tokenize(chunk.text)
        contexts.append(chunk.text if len(ids) <= room else llm.tokenizer.decode(ids[:room]))
        used += len(ids)
    row = cut_to_budget(req, contexts)
    return Prompt(row, None, row_length(row), chunks_read=len(contexts))


def cut_to_budget(req: PromptRequest, contexts: list[str]) -> Row:
    """The row of the first len(contexts) chunks; while a token merge at a join overshoots
    the budget, the last context loses as many tokens as the excess (gone when empty)."""
    while True:
        row = req.budget_row(range(len(contexts)), contexts)
        over = row_length(row) - req.budget
        if over <= 0 or not contexts:
            return row
        ids = req.llm.tokenize(contexts[-1])
        cut = req.llm.tokenizer.decode(ids[: max(0, len(ids) - over)])
        if cut.strip() and len(req.llm.tokenize(cut)) < len(ids):
            contexts[-1] = cut
        else:
            contexts.pop()


def spans_prompt(req: PromptRequest) -> Prompt:
    """The best spans raw, in document order, and nothing else, within the budget; a chunk's
    slot in the frame is paid when its first span is chosen."""
    llm, budget = req.llm, req.budget
    frame = frame_costs(req, len(req.chunks))
    chosen: list[Span] = []
    read: frozenset[int] = frozenset()
    used = 0  # content positions so far
    for span in sorted(scored_spans(req), key=lambda s: -s.score):
        cost, reading = len(llm.tokenize(span.text)), read | {span.chunk}
        if frame(reading) + used + cost <= budget:
            chosen.append(span)
            read, used = reading, used + cost
    keep = sorted(chosen, key=lambda s: (s.chunk, s.start))
    while True:
        row, n_read = spans_row(req, keep)
        if row_length(row) <= budget or not keep:
            return Prompt(row, None, row_length(row), keep, n_read)
        keep.remove(min(keep, key=lambda s: s.score))  # a join overshot: drop the weakest


def spans_row(req: PromptRequest, keep: Sequence[Span]) -> tuple[Row, int]:
    """The row of the spans `keep` (in document order), each chunk read as its spans joined;
    and how many chunks it reads."""
    read = sorted({s.chunk for s in keep})
    contexts = ["".join(s.text for s in keep if s.chunk == i) for i in read]
    return req.budget_row(read, contexts), len(read)


def expand_prompt(req: PromptRequest) -> Prompt:
    """The best spans raw and the rest compressed; the lowest-ranked chunks go first (as in
    truncated) while not even the compressed chunks fit. Spans start where sentences do, not
    on the index's stride (which can start one on the last token of the sentence before;
    docs/training.md, "What next" 15 and 16): a stored state a raw span shares with the run
    beside it is read in the run."""
    spans = scored_spans(req)
    for n in range(len(req.chunks), 0, -1):
        kept = [s for s in spans if s.chunk < n]
        fixed = req.frame_positions(range(n), n)  # every chunk kept is read, compressed or raw
        prompt = expand_chunks(req, req.chunks[:n], kept, fixed)
        if prompt is not None:
            return prompt
    if req.cfg.k is not None:
        raise InputTooLongError(
            f"not even one chunk compressed at k={req.cfg.k} fits a budget of {req.budget} "
            "positions: raise --k or --budget, or leave k on auto"
        )
    return question_only(req)


def expand_chunks(req, chunks, spans, fixed) -> Prompt | None:
    """Plan by estimated costs, then build rows: from the planned k upwards (only at `k` when
    one is given), and dropping the weakest expanded span when no k fits (token merges at
    joins can add a few positions). None when the chunks compressed at the largest k (at `k`)
    overflow the budget."""
    llm, stride, budget, k = req.llm, req.stride, req.budget, req.cfg.k
    costs = {(s.chunk, s.start, s.end): len(llm.tokenize(s.text)) for s in spans}
    plan = plan_expansion(
        spans, lambda s: costs[(s.chunk, s.start, s.end)], fixed, budget, stride, k
    )
    if plan is None:
        return None
    raw = [s for s in spans if (s.chunk, s.start, s.end) in plan.raw]
    states = [torch.from_numpy(c.states.astype(np.float32)) for c in chunks]  # once, every k
    stored = (states, [c.pooling for c in chunks])
    ks = k_choices(stride, k, at_least=plan.k)
    while True:
        for kk in ks:
            row = expanded_row(req, stored, spans, raw, kk)
            if row_length(row) <= budget:
                return Prompt(row, kk, row_length(row), raw, len(chunks))
        if not raw:
            return None
        raw.remove(min(raw, key=lambda s: s.score))
        ks = k_choices(stride, k)


def expanded_row(req: PromptRequest, stored, spans, raw, k) -> Row:
    """`stored`: (each chunk's states (n_i, d), each chunk's pooling); every chunk is read,
    its expanded spans as text and the runs between them as states down-scaled to k."""
    keys = {(s.chunk, s.start, s.end) for s in raw}
    contexts = []
    for i, (chunk_states, pooling) in enumerate(zip(*stored, strict=True)):
        own = [s for s in spans if s.chunk == i]
        mine = {(s.start, s.end) for s in own if (i, s.start, s.end) in keys}
        contexts.append(chunk_parts(chunk_states, own, mine, k, req.stride, pooling))
    return req.budget_row(range(len(contexts)), contexts)


def describe_spans(chunks: Sequence[Retrieved], spans: Sequence[Span]) -> list[dict]:
    """The spans read raw, as `ask --json`, `serve` and the query engine report them."""
    return [
        {
            "doc_path": chunks[s.chunk].doc_path,
            "row_id": chunks[s.chunk].row_id,
            "tokens": [s.start, s.end],
            "score": round(s.score, 4),
            "text": s.text,
        }
        for s in spans
    ]

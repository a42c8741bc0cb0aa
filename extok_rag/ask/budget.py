"""Prompts under a position budget: `expand` (the best spans raw, the rest of every chunk as
extensible embeddings), and its two controls, `spans` (the best spans raw, nothing else) and
`truncated` (the raw chunks, cut where the budget ends)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from extok_rag.ask.attention import attention_scores
from extok_rag.ask.prompt import Prompt, PromptRequest, question_only
from extok_rag.ask.retrieval import Retrieved
from extok_rag.config import k_choices
from extok_rag.errors import InputTooLongError
from extok_rag.models.mixed_input import row_length
from extok_rag.spans import (
    Span,
    chunk_parts,
    chunk_spans,
    plan_expansion,
    score_spans,
    token_starts,
)


def scored_spans(req: PromptRequest) -> list[Span]:
    """Every retrieved chunk cut into state-aligned spans, scored against the question."""
    llm, stride = req.llm, req.stride
    spans = [
        span
        for i, c in enumerate(req.chunks)
        for span in chunk_spans(i, c.text, token_starts(llm.tokenizer, c.text, c.n_tokens), stride)
    ]
    return score_spans(
        req.cfg.scorer,
        req.embedder,
        req.question,
        spans,
        lambda: attention_scores(llm, req.question, req.chunks, spans, req.headers, stride),
    )


def truncated_prompt(req: PromptRequest) -> Prompt:
    """The raw chunks in rank order, the last one cut so the prompt fits the budget."""
    llm, headers = req.llm, req.headers
    room = req.budget - req.frame_positions(len(req.chunks), headers)
    contexts: list[str] = []
    for chunk in req.chunks:
        ids = llm.tokenize(chunk.text)
        if room <= 0:
            break
        contexts.append(chunk.text if len(ids) <= room else llm.tokenizer.decode(ids[:room]))
        room -= len(ids)
    row = req.row(contexts, headers[: len(contexts)] if headers else None)
    return Prompt(row, None, row_length(row), chunks_read=len(contexts))


def spans_prompt(req: PromptRequest) -> Prompt:
    """The best spans raw, in document order, and nothing else, within the budget."""
    llm, headers, budget = req.llm, req.headers, req.budget
    spans = scored_spans(req)
    chosen: list[Span] = []
    used = req.frame_positions(len(req.chunks), headers)
    for span in sorted(spans, key=lambda s: -s.score):
        cost = len(llm.tokenize(span.text))
        if used + cost <= budget:
            chosen.append(span)
            used += cost
    keep = sorted(chosen, key=lambda s: (s.chunk, s.start))
    while True:
        by_chunk = [[s for s in keep if s.chunk == i] for i in range(len(req.chunks))]
        contexts = ["".join(s.text for s in own) for own in by_chunk if own]
        kept_headers = (
            [h for h, own in zip(headers, by_chunk, strict=True) if own] if headers else None
        )
        row = req.row(contexts, kept_headers)
        if row_length(row) <= budget or not keep:
            return Prompt(row, None, row_length(row), keep, len(contexts))
        keep.remove(min(keep, key=lambda s: s.score))  # a join overshot: drop the weakest


def expand_prompt(req: PromptRequest) -> Prompt:
    """The best spans raw and the rest compressed; the lowest-ranked chunks go first (as in
    truncated) while not even the compressed chunks fit."""
    spans, headers = scored_spans(req), req.headers
    for n in range(len(req.chunks), 0, -1):
        kept = [s for s in spans if s.chunk < n]
        kept_headers = headers[:n] if headers else None
        fixed = req.frame_positions(n, kept_headers)
        prompt = expand_chunks(req, req.chunks[:n], kept, kept_headers, fixed)
        if prompt is not None:
            return prompt
    if req.cfg.k is not None:
        raise InputTooLongError(
            f"not even one chunk compressed at k={req.cfg.k} fits a budget of {req.budget} "
            "positions: raise --k or --budget, or leave k on auto"
        )
    return question_only(req)


def expand_chunks(req, chunks, spans, headers, fixed) -> Prompt | None:
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
            row = expanded_row(req, stored, spans, raw, headers, kk)
            if row_length(row) <= budget:
                return Prompt(row, kk, row_length(row), raw, len(chunks))
        if not raw:
            return None
        raw.remove(min(raw, key=lambda s: s.score))
        ks = k_choices(stride, k)


def expanded_row(req: PromptRequest, stored, spans, raw, headers, k):
    """`stored`: (each chunk's states (n_i, d), each chunk's pooling)."""
    keys = {(s.chunk, s.start, s.end) for s in raw}
    contexts = []
    for i, (chunk_states, pooling) in enumerate(zip(*stored, strict=True)):
        own = [s for s in spans if s.chunk == i]
        mine = {(s.start, s.end) for s in own if (i, s.start, s.end) in keys}
        contexts.append(chunk_parts(chunk_states, own, mine, k, req.stride, pooling))
    return req.row(contexts, headers)


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

"""Prompts under a position budget: `expand` (best spans raw, the rest of every chunk as
extensible embeddings), and its two controls, `spans` (the best spans raw, nothing else) and
`truncated` (the raw chunks, cut where the budget ends)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from extok_rag.config import AskConfig, k_choices
from extok_rag.errors import InputTooLongError
from extok_rag.expansion import (
    Span,
    chunk_parts,
    chunk_spans,
    plan_expansion,
    score_spans,
    token_starts,
)
from extok_rag.models.ask_frame import ask_frame
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import EmbeddingSegment, row_length
from extok_rag.query import Prompt, Retrieved, chunk_embeddings


def budget_prompt(
    llm: FrozenLLM,
    embedder,
    question: str,
    chunks: Sequence[Retrieved],
    cfg: AskConfig,
    stride: int,
    reserve: int,
) -> Prompt:
    budget = cfg.budget if cfg.budget is not None else llm.max_positions - reserve
    headers = [f"[{c.doc_path}]\n" for c in chunks] if cfg.source_lines else None
    fixed = frame_positions(llm, question, len(chunks), headers)
    if cfg.mode == "truncated":
        return truncated_prompt(llm, question, chunks, headers, budget - fixed)
    spans = [
        span
        for i, c in enumerate(chunks)
        for span in chunk_spans(i, c.text, token_starts(llm.tokenizer, c.text, c.n_tokens), stride)
    ]
    spans = score_spans(
        cfg.scorer,
        embedder,
        question,
        spans,
        lambda: attention_scores(llm, question, chunks, spans, headers, stride),
    )
    if cfg.mode == "spans":
        return spans_prompt(llm, question, chunks, spans, headers, budget, fixed)
    for n in range(len(chunks), 0, -1):  # the lowest-ranked chunks go first, as in truncated
        kept = [s for s in spans if s.chunk < n]
        kept_headers = headers[:n] if headers else None
        fixed = frame_positions(llm, question, n, kept_headers)
        prompt = expand_prompt(
            llm, question, chunks[:n], kept, kept_headers, budget, fixed, stride, cfg.k
        )
        if prompt is not None:
            return prompt
    if cfg.k is not None:
        raise InputTooLongError(
            f"not even one chunk compressed at k={cfg.k} fits a budget of {budget} positions: "
            "raise --k or --budget, or leave k on auto"
        )
    return question_only(llm, question, budget)


def question_only(llm: FrozenLLM, question: str, budget: int) -> Prompt:
    """The prompt when not even one chunk compressed at the largest k fits: the frame and the
    question alone, as the two controls read nothing then either."""
    row = llm.chat_row(ask_frame(question, [], None))
    if row_length(row) > budget:
        raise InputTooLongError(
            f"a budget of {budget} positions does not hold the prompt frame and the question "
            f"({row_length(row)} positions): raise --budget"
        )
    return Prompt(row, None, row_length(row), chunks_read=0)


def frame_positions(llm: FrozenLLM, question: str, n_chunks: int, headers) -> int:
    """Positions of the prompt with `n_chunks` empty contexts: the frame every mode pays."""
    empty = torch.zeros(0, llm.hidden_size)  # an empty context: the frame is tokenised as is
    return row_length(llm.chat_row(ask_frame(question, [empty] * n_chunks, headers)))


def expand_prompt(
    llm, question, chunks, spans, headers, budget, fixed, stride, k=None
) -> Prompt | None:
    """Plan by estimated costs, then build rows: from the planned k upwards (only at `k` when
    one is given), and dropping the weakest expanded span when no k fits (token merges at
    joins can add a few positions). None when the chunks compressed at the largest k (at `k`)
    overflow the budget."""
    costs = {(s.chunk, s.start, s.end): len(llm.tokenize(s.text)) for s in spans}
    plan = plan_expansion(
        spans, lambda s: costs[(s.chunk, s.start, s.end)], fixed, budget, stride, k
    )
    if plan is None:
        return None
    raw = [s for s in spans if (s.chunk, s.start, s.end) in plan.raw]
    states = [torch.from_numpy(c.states.astype(np.float32)) for c in chunks]  # once, every k
    poolings = [c.pooling for c in chunks]
    ks = k_choices(stride, k, at_least=plan.k)
    while True:
        for kk in ks:
            row = expanded_row(llm, question, (states, poolings), spans, raw, headers, kk, stride)
            if row_length(row) <= budget:
                return Prompt(row, kk, row_length(row), raw, len(chunks))
        if not raw:
            return None
        raw.remove(min(raw, key=lambda s: s.score))
        ks = k_choices(stride, k)


def expanded_row(llm, question, stored, spans, raw, headers, k, stride):
    """`stored`: (each chunk's states (n_i, d), each chunk's pooling)."""
    keys = {(s.chunk, s.start, s.end) for s in raw}
    contexts = []
    for i, (chunk_states, pooling) in enumerate(zip(*stored, strict=True)):
        own = [s for s in spans if s.chunk == i]
        mine = {(s.start, s.end) for s in own if (i, s.start, s.end) in keys}
        contexts.append(chunk_parts(chunk_states, own, mine, k, stride, pooling))
    return llm.chat_row(ask_frame(question, contexts, headers))


def spans_prompt(llm, question, chunks, spans, headers, budget, fixed) -> Prompt:
    """The best spans raw, in document order, and nothing else, within the budget."""
    chosen: list[Span] = []
    used = fixed
    for span in sorted(spans, key=lambda s: -s.score):
        cost = len(llm.tokenize(span.text))
        if used + cost <= budget:
            chosen.append(span)
            used += cost
    keep = sorted(chosen, key=lambda s: (s.chunk, s.start))
    while True:
        by_chunk = [[s for s in keep if s.chunk == i] for i in range(len(chunks))]
        contexts = ["".join(s.text for s in own) for own in by_chunk if own]
        kept_headers = (
            [h for h, own in zip(headers, by_chunk, strict=True) if own] if headers else None
        )
        row = llm.chat_row(ask_frame(question, contexts, kept_headers))
        if row_length(row) <= budget or not keep:
            return Prompt(row, None, row_length(row), keep, len(contexts))
        keep.remove(min(keep, key=lambda s: s.score))  # a join overshot: drop the weakest


def truncated_prompt(llm, question, chunks, headers, room: int) -> Prompt:
    """The raw chunks in rank order, the last one cut so the context takes `room` positions."""
    contexts: list[str] = []
    for chunk in chunks:
        ids = llm.tokenize(chunk.text)
        if room <= 0:
            break
        contexts.append(chunk.text if len(ids) <= room else llm.tokenizer.decode(ids[:room]))
        room -= len(ids)
    row = llm.chat_row(ask_frame(question, contexts, headers[: len(contexts)] if headers else None))
    return Prompt(row, None, row_length(row), chunks_read=len(contexts))


def describe_spans(chunks: Sequence[Retrieved], spans: Sequence[Span]) -> list[dict]:
    """The spans read raw, as `ask --json` and the query engine's metadata report them."""
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


ATTENTION_K = 8  # the first pass reads every chunk at this k (cheap: ~1/8 of raw's positions)


@torch.inference_mode()
def attention_scores(llm, question, chunks, spans, headers, stride) -> np.ndarray:
    """A first cheap pass: every chunk compressed at ATTENTION_K, then the question; a span's
    score is the attention the question's closing tokens pay to the embeddings that cover it
    (mean over layers, heads and those tokens; mean over the span's embeddings)."""
    k = max(ATTENTION_K, stride) // stride * stride
    contexts = [chunk_embeddings(c, k, stride) for c in chunks]
    row = llm.chat_row(ask_frame(question, contexts, headers))
    batch = llm.batch([row])
    model = llm.model
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")  # sdpa returns no attention weights
    try:
        out = model(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            output_attentions=True,
            use_cache=False,
            logits_to_keep=1,
        )
    finally:
        model.set_attn_implementation(previous)
    starts = np.cumsum([0, *(len(seg) for seg in row)])
    query = slice(int(starts[-2]), int(starts[-1]))  # the closing segment: "Answer ...: {q}"
    att = torch.stack([a[0, :, query].float().mean(dim=(0, 1)) for a in out.attentions])
    received = att.mean(0).cpu().numpy()  # (T,) attention each position receives
    embed_at = [int(starts[i]) for i, seg in enumerate(row) if isinstance(seg, EmbeddingSegment)]
    scores = []
    for span in spans:
        lo, hi = span.start // k, -(-span.end // k)  # the embeddings covering the span
        scores.append(float(received[embed_at[span.chunk] + lo : embed_at[span.chunk] + hi].mean()))
    return np.array(scores)

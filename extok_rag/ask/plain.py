"""The modes without a position budget: `none`, `raw`, `compressed` and `hybrid`. With k auto,
a compressing mode reads its chunks at the smallest k (of AUTO_K_CHOICES, a multiple of the
index stride) that leaves the answer's positions free in the window."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from extok_rag.ask.prompt import Prompt, PromptRequest
from extok_rag.ask.retrieval import chunk_embeddings
from extok_rag.config import k_choices
from extok_rag.errors import InputTooLongError
from extok_rag.models.mixed_input import row_length

Contexts = Callable[[int | None], Sequence]  # k -> the chunks' contexts at that k


def fitted(req: PromptRequest, contexts: Contexts, ks: Sequence[int | None]) -> Prompt:
    """The first k of `ks` whose prompt leaves `req.reserve` positions free in the window."""
    positions, k = 0, None
    for k in ks:
        row = req.row(contexts(k), req.headers)
        positions = row_length(row)
        if positions + req.reserve <= req.llm.max_positions:
            return Prompt(row, k, positions)
    raise InputTooLongError(
        f"the prompt takes {positions} positions (+{req.reserve} for the answer) at k={k}; "
        f"the LLM window is {req.llm.max_positions}: lower --top-n or raise --k"
    )


def none_prompt(req: PromptRequest) -> Prompt:
    return fitted(req, lambda k: [], [None])


def raw_prompt(req: PromptRequest) -> Prompt:
    return fitted(req, lambda k: [c.text for c in req.chunks], [None])


def compressed_prompt(req: PromptRequest) -> Prompt:
    if not req.chunks:
        return none_prompt(req)

    def contexts(k):
        return [chunk_embeddings(c, k, req.stride) for c in req.chunks]

    return fitted(req, contexts, k_choices(req.stride, req.cfg.k))


def hybrid_prompt(req: PromptRequest) -> Prompt:
    """The best chunk raw, the others compressed (one chunk: raw)."""
    if len(req.chunks) <= 1:
        return raw_prompt(req)
    best, rest = req.chunks[0], req.chunks[1:]

    def contexts(k):
        return [best.text, *(chunk_embeddings(c, k, req.stride) for c in rest)]

    return fitted(req, contexts, k_choices(req.stride, req.cfg.k))

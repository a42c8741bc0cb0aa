"""The ask path: question -> retrieval vector -> FAISS top-n -> LanceDB rows -> each chunk's
stored states down-scaled to k -> chat prompt -> the frozen LLM.

    [raw instruction] [source line][compressed chunk] … [raw question]   (in the user turn)

States are stored at the index's base stride s; a chunk is read at k (a multiple of s) by
down-scaling the stored states by k / s, the way the tokenizer was trained (the manifest's
`downscale`: strided sampling or window means). No extensible tokenizer runs here: the index
already holds its output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from extok_rag.config import AskConfig, DownscaleMethod, GenerationConfig, check_k, k_choices
from extok_rag.errors import ExtokError, IncompatibleModelError, InputTooLongError
from extok_rag.expansion import Span
from extok_rag.indexes import IndexSnapshot
from extok_rag.models.ask_frame import ask_frame
from extok_rag.models.embedder import Embedder
from extok_rag.models.extensible_tokenizer import downscale
from extok_rag.models.generation import stream_text
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import Row, row_length


@dataclass(frozen=True)
class Retrieved:
    """One retrieved chunk: its score, text and stored states (n_states, d) float16, pooled
    from the tokenizer's output by `pooling` (and read at larger k the same way)."""

    row_id: int
    score: float
    doc_path: str
    text: str
    n_tokens: int
    states: np.ndarray
    pooling: DownscaleMethod = "strided"


@dataclass
class Prompt:
    row: Row
    k: int | None  # the k used for compressed chunks (None when none is compressed)
    positions: int  # positions the prompt takes in the LLM window
    expanded: list[Span] = field(default_factory=list)  # expand / spans: the spans read raw
    chunks_read: int | None = None  # budget modes: the retrieved chunks read (the rest did not fit)


def check_llm(snapshot: IndexSnapshot, llm: FrozenLLM) -> None:
    """Refuse to read an index whose states were made for another LLM."""
    made_for = snapshot.manifest.llm
    if not made_for.matches(llm.identity):
        raise IncompatibleModelError(
            f"index was built for LLM {made_for.describe()}, not {llm.identity.describe()}: "
            "use that --llm or re-index"
        )


def retrieve(snapshot: IndexSnapshot, embedder: Embedder, question: str, n: int) -> list[Retrieved]:
    """Top-n chunks by inner product of normalised MiniLM vectors, best first."""
    if snapshot.manifest.counts.chunks == 0:
        raise ExtokError("the index is empty: run `extok-rag index` on a corpus with text")
    ids, scores = snapshot.vectors.search(embedder.embed([question]), n)
    hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
    rows = snapshot.table.fetch([i for i, _ in hits])
    pooling = snapshot.manifest.downscale
    return [
        Retrieved(r.row_id, s, r.doc_path, r.text, r.n_tokens, r.states, pooling)
        for r, (_, s) in zip(rows, hits, strict=True)
    ]


def chunk_embeddings(chunk: Retrieved, k: int, stride: int) -> torch.Tensor:
    """Stored states (stride s) down-scaled to k: (ceil(n_states / (k/s)), d) float32."""
    states = torch.from_numpy(chunk.states.astype(np.float32))
    return downscale(states, check_k(k, stride) // stride, chunk.pooling)


def user_parts(
    question: str, chunks: Sequence[Retrieved], cfg: AskConfig, k: int | None, stride: int
) -> list[str | torch.Tensor]:
    """The user turn (`ask_frame`): the question, the context chunks (raw or compressed), the
    question again."""
    if cfg.mode == "none" or not chunks:
        return ask_frame(question, [])
    contexts = [
        chunk.text
        if cfg.mode == "raw" or (cfg.mode == "hybrid" and i == 0)
        else chunk_embeddings(chunk, k or stride, stride)
        for i, chunk in enumerate(chunks)
    ]
    headers = [f"[{c.doc_path}]\n" for c in chunks] if cfg.source_lines else None
    return ask_frame(question, contexts, headers)


def build_prompt(
    llm: FrozenLLM,
    question: str,
    chunks: Sequence[Retrieved],
    cfg: AskConfig,
    stride: int,
    reserve: int,
    embedder: Embedder | None = None,
) -> Prompt:
    """The chat row for `question`; with k auto, the smallest k that leaves `reserve`
    positions free for the answer. Modes with a position budget (expand, spans, truncated)
    need the retrieval `embedder` to score spans."""
    if cfg.mode in ("expand", "spans", "truncated") and chunks:
        from extok_rag.query_budget import budget_prompt

        return budget_prompt(llm, embedder, question, chunks, cfg, stride, reserve)
    compressed = cfg.mode in ("compressed", "hybrid") and len(chunks) > (cfg.mode == "hybrid")
    candidates = k_choices(stride, cfg.k)
    if not compressed:
        candidates = [None]
    for k in candidates:
        row = llm.chat_row(user_parts(question, chunks, cfg, k, stride))
        positions = row_length(row)
        if positions + reserve <= llm.max_positions:
            return Prompt(row, k, positions)
    raise InputTooLongError(
        f"the prompt takes {positions} positions (+{reserve} for the answer) at k={k}; the "
        f"LLM window is {llm.max_positions}: lower --top-n or raise --k"
    )


def ask(
    llm: FrozenLLM,
    embedder: Embedder,
    snapshot: IndexSnapshot,
    question: str,
    cfg: AskConfig,
    gen: GenerationConfig,
) -> tuple[list[Retrieved], Prompt, Iterator[str]]:
    """Retrieve, build the prompt, and return the streamed answer (lazy)."""
    check_llm(snapshot, llm)
    chunks = [] if cfg.mode == "none" else retrieve(snapshot, embedder, question, cfg.top_n)
    stride = snapshot.manifest.stride
    prompt = build_prompt(llm, question, chunks, cfg, stride, gen.max_new_tokens, embedder)
    return chunks, prompt, stream_text(llm, prompt.row, gen)

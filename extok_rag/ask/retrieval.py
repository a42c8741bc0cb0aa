"""Retrieval: question -> retrieval vector -> FAISS top-n -> LanceDB rows, and each chunk's
stored states down-scaled to k.

States are stored at the index's base stride s; a chunk is read at k (a multiple of s) by
down-scaling the stored states by k / s, the way the tokenizer was trained (the manifest's
`downscale`: strided sampling or window means). No extensible tokenizer runs here: the index
already holds its output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from extok_rag.config import DownscaleMethod, check_k
from extok_rag.errors import ExtokError, IncompatibleModelError
from extok_rag.indexes import IndexSnapshot
from extok_rag.models.embedder import Embedder
from extok_rag.models.extensible_tokenizer import downscale
from extok_rag.models.llm import FrozenLLM


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


def check_llm(snapshot: IndexSnapshot, llm: FrozenLLM) -> None:
    """Refuse to read an index whose states were made for another LLM."""
    made_for = snapshot.manifest.llm
    if not made_for.matches(llm.identity):
        raise IncompatibleModelError(
            f"index was built for LLM {made_for.describe()}, not {llm.identity.describe()}: "
            "use that --llm or re-index"
        )


def check_embedder(snapshot: IndexSnapshot, embedder: Embedder) -> None:
    """Refuse to search an index whose vectors another retrieval embedder made: its questions
    would land in the wrong vector space and retrieve noise."""
    made_with = snapshot.manifest.embedder
    if made_with != embedder.identity:
        raise IncompatibleModelError(
            f"index was built with retrieval embedder {made_with}, not {embedder.identity}: "
            "use that --embedder or re-index"
        )


def check_models(snapshot: IndexSnapshot, llm: FrozenLLM, embedder: Embedder | None) -> None:
    """`check_llm`, and `check_embedder` when the embedder is given."""
    check_llm(snapshot, llm)
    if embedder is not None:
        check_embedder(snapshot, embedder)


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

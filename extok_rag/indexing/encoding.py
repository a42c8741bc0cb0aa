"""Chunks -> (retrieval vectors, extensible-embedding states at the base stride).

Both models see chunks sorted by length and batched by a padded-token budget, so a batch wastes
little compute on padding. States leave the extensible tokenizer as (L, d) in the model dtype,
are down-scaled by the base stride s the way the tokenizer was trained (`downscale(states, s,
method)`: the last state of each s-window, or its mean) and stored as float16: (ceil(L/s), d)
per chunk. Readers pool the stored rows further by the same method; for mean that is the mean
of each k-window exactly, except in a chunk's last window when L is not a multiple of s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from extok_rag.chunking import Chunk
from extok_rag.config import DownscaleMethod
from extok_rag.indexes import ChunkRecord
from extok_rag.models.embedder import DEFAULT_BATCH_TOKENS, Embedder
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer


class ChunkEncoder:
    """Runs the extensible tokenizer and the retrieval embedder over chunks."""

    def __init__(
        self,
        tokenizer: ExtensibleTokenizer,
        embedder: Embedder,
        stride: int,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
    ) -> None:
        self.tokenizer = tokenizer
        self.embedder = embedder
        self.stride = stride
        self.batch_tokens = batch_tokens

    def encode(self, chunks: Sequence[Chunk]) -> tuple[np.ndarray, list[np.ndarray]]:
        """-> (vectors (n, dim) float32 unit norm, states: n arrays (ceil(L_i/s), d) float16)."""
        vectors = self.embedder.embed([c.text for c in chunks], self.batch_tokens)
        return vectors, self.states(chunks)

    @property
    def method(self) -> DownscaleMethod:
        return self.tokenizer.config.downscale

    def states(self, chunks: Sequence[Chunk]) -> list[np.ndarray]:
        ids = [torch.from_numpy(c.token_ids) for c in chunks]
        return self.tokenizer.stored_states(ids, self.stride, self.batch_tokens)


def encode_chunks(
    encoder: ChunkEncoder, chunks: Sequence[Chunk], doc_hashes: dict[str, str]
) -> list[ChunkRecord]:
    """The encode stage of both engines: one group's chunks -> the records to store, in order.
    `doc_hashes`: {doc_path: doc_hash} of the group's documents."""
    vectors, states = encoder.encode(chunks)
    return [
        ChunkRecord(
            chunk_id=c.chunk_id,
            doc_path=c.doc_path,
            doc_hash=doc_hashes[c.doc_path],
            content_hash=c.content_hash,
            position=c.position,
            text=c.text,
            n_tokens=c.n_tokens,
            vector=vector,
            states=state,
        )
        for c, vector, state in zip(chunks, vectors, states, strict=True)
    ]

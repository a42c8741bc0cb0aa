"""A text given as context (`extok-rag generate --context FILE`): cut into chunks as the
indexer cuts documents, encoded into extensible embeddings as the indexer encodes them (at
stride 1: every state kept), and read as `ask` reads retrieved chunks, in document order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from extok_rag.ask.pooling import tokenizer_pooling
from extok_rag.ask.retrieval import Retrieved
from extok_rag.chunking import Chunker, ChunkingConfig
from extok_rag.models.defaults import resolve_tokenizer
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM

CONTEXT_STRIDE = 1


def load_tokenizer(
    llm: FrozenLLM, checkpoint: Path | None, notice: Callable[[str], None] = print
) -> ExtensibleTokenizer:
    """The given checkpoint, else the shipped one trained for this LLM, else an untrained one
    (with a notice: its embeddings carry little content)."""
    path = checkpoint or resolve_tokenizer(None, llm.identity)
    if path is None:
        notice(
            "no trained tokenizer for this LLM: using an untrained extensible tokenizer, "
            "whose embeddings carry little content"
        )
        return ExtensibleTokenizer.from_llm(llm)
    return ExtensibleTokenizer.from_pretrained(path, llm)


def context_chunks(
    llm: FrozenLLM, tokenizer: ExtensibleTokenizer, name: str, text: str, chunk_tokens: int
) -> list[Retrieved]:
    """`text` as chunks of about `chunk_tokens` tokens, each with its states at stride 1."""
    import torch

    pieces = Chunker(llm.tokenizer, ChunkingConfig(chunk_tokens=chunk_tokens)).split(name, text)
    ids = [torch.from_numpy(c.token_ids) for c in pieces]
    states = tokenizer.stored_states(ids, CONTEXT_STRIDE) if ids else []
    pooling = tokenizer_pooling(tokenizer)
    return [
        Retrieved(-1, 0.0, c.doc_path, c.text, c.n_tokens, s, pooling)
        for c, s in zip(pieces, states, strict=True)
    ]

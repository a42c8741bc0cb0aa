"""Documents -> token-aware chunks with stable ids, measured in the LLM's own tokens.

A chunk's token ids are exactly what the LLM tokenizer produced, so the states stored for it
are the states of those ids, and its length in tokens is exact (never above `chunk_tokens`).

Two splitters:

- "tokens" (default): the document is tokenised once (a fast tokenizer gives character offsets),
  then cut into windows of `chunk_tokens`, each ending at the last paragraph or sentence
  boundary in its final quarter when there is one. About 300k tokens/s for SmolLM2's tokenizer.
- "sentence": LlamaIndex's `SentenceSplitter` driven by the LLM tokenizer (sentence-aware, but it
  re-tokenises every piece: about 27k tokens/s, a bottleneck next to a GPU encoder; measured in
  docs/indexing.md). A chunk it makes over `chunk_tokens` is cut into windows.

Chunk id = `<doc_path>#<position>@<content hash>`: stable while a document's text is unchanged,
and different whenever the chunk's text or place changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

# 256 LLM tokens: SmolLM2 tokens ≈ word pieces, so all-MiniLM-L6-v2 (256 word pieces at most)
# reads the whole chunk in nearly every case; measured in docs/indexing.md. A multiple of 32 so
# every k in {2, 4, 8, 16, 32} divides a full chunk.
DEFAULT_CHUNK_TOKENS = 256
Splitter = Literal["tokens", "sentence"]
_PARAGRAPH, _SENTENCE, _LINE = 3, 2, 1  # boundary strength after a token


@dataclass(frozen=True)
class ChunkingConfig:
    """How documents become chunks. Recorded verbatim in the index manifest."""

    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    splitter: Splitter = "tokens"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ChunkingConfig:
        return cls(chunk_tokens=int(data["chunk_tokens"]), splitter=data["splitter"])


@dataclass(frozen=True, eq=False)
class Chunk:
    """One chunk of a document. `token_ids`: (n_tokens,) int64, the LLM's ids for `text`."""

    doc_path: str
    position: int  # index of the chunk within its document
    text: str
    token_ids: np.ndarray

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)

    @property
    def chunk_id(self) -> str:
        return chunk_id(self.doc_path, self.position, self.content_hash)


def content_hash(text: str) -> str:
    """sha256 of the UTF-8 text, 16 hex digits."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def chunk_id(doc_path: str, position: int, text_hash: str) -> str:
    return f"{doc_path}#{position}@{text_hash}"


class Chunker:
    """Splits text into chunks of at most `config.chunk_tokens` LLM tokens.

    `tokenizer`: the LLM's Hugging Face tokenizer (a fast one gives exact text spans; a slow one
    falls back to decoding each window).
    """

    def __init__(self, tokenizer, config: ChunkingConfig | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = config or ChunkingConfig()
        if self.config.chunk_tokens < 8:
            raise ValueError(f"chunk_tokens must be >= 8, got {self.config.chunk_tokens}")
        self._sentence_splitter = None

    def split(self, doc_path: str, text: str) -> list[Chunk]:
        """The chunks of one document, in order; none for blank text."""
        if not text.strip():
            return []
        pieces = self._split_sentences(text) if self.config.splitter == "sentence" else [text]
        spans: list[tuple[str, np.ndarray]] = []
        for piece in pieces:
            spans.extend(self._windows(piece))
        return [
            Chunk(doc_path, i, chunk_text, ids)
            for i, (chunk_text, ids) in enumerate(s for s in spans if s[0].strip())
        ]

    # -- internals --

    def _windows(self, text: str) -> list[tuple[str, np.ndarray]]:
        """Tokenise `text` once and cut it into windows of at most chunk_tokens tokens."""
        n_max = self.config.chunk_tokens
        if not getattr(self.tokenizer, "is_fast", False):
            ids = np.asarray(self.tokenizer.encode(text, add_special_tokens=False), np.int64)
            return [
                (self.tokenizer.decode(ids[i : i + n_max].tolist()), ids[i : i + n_max])
                for i in range(0, len(ids), n_max)
            ]
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        strength = boundary_strengths(text, offsets[:, 1])
        out = []
        start = 0
        while start < len(ids):
            end = cut_point(strength, start, n_max)
            lo = offsets[start, 0] if start else 0
            hi = offsets[end, 0] if end < len(ids) else len(text)
            out.append((text[lo:hi].strip(), ids[start:end]))
            start = end
        return out

    def _split_sentences(self, text: str) -> list[str]:
        if self._sentence_splitter is None:
            from llama_index.core.node_parser import SentenceSplitter

            def llm_tokens(t: str) -> list[int]:
                return self.tokenizer.encode(t, add_special_tokens=False)

            self._sentence_splitter = SentenceSplitter(
                chunk_size=self.config.chunk_tokens, chunk_overlap=0, tokenizer=llm_tokens
            )
        return self._sentence_splitter.split_text(text)


def boundary_strengths(text: str, ends: np.ndarray) -> np.ndarray:
    """(n,) int8: how good a cut after each token is, from the characters at its end offset:
    3 a blank line, 2 a sentence end, 1 a line end, 0 elsewhere."""
    strength = np.zeros(len(ends), dtype=np.int8)
    for t, end in enumerate(ends.tolist()):
        after = text[end : end + 2]
        before = text[end - 1 : end] if end else ""
        if after.startswith("\n\n") or (before == "\n" and after.startswith("\n")):
            strength[t] = _PARAGRAPH
        elif before in ".!?" and before and (after[:1].isspace() or not after):
            strength[t] = _SENTENCE
        elif after.startswith("\n") or before == "\n":
            strength[t] = _LINE
    return strength


def cut_point(strength: np.ndarray, start: int, n_max: int) -> int:
    """End (exclusive) of the window from `start`: the strongest boundary in the last quarter
    of the n_max-token window (the latest among equals), else a full window."""
    end = min(start + n_max, len(strength))
    if end == len(strength):
        return end
    lo = start + (3 * n_max) // 4
    tail = strength[lo - 1 : end]  # a cut after token t ends the window at t + 1
    if tail.max() == 0:
        return end
    best = np.flatnonzero(tail == tail.max())[-1]
    return lo + int(best)

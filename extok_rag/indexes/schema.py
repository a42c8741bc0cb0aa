"""The chunk table's schema: its Arrow columns, state encodings and the records stored in it.

Each row is one chunk: its text, retrieval vector ("vector", (dim,)) and extensible embeddings
("states", (n_states, d)) as an Arrow `list<fixed_size_list<T, d>>`, so a chunk of any length
is one row and reading it back is a reshape. Two state encodings (the table's schema says
which):

- `float16`: T = float16, 2·d bytes per state, read back bit for bit;
- `int8`: T = int8 plus one scale per state ("state_scales", `list<float16>`), d + 2 bytes
  per state: symmetric per-vector quantisation, x ≈ q · scale with scale = max|x| / 127
  rounded up to float16, so |x - q · scale| ≤ scale / 2 ≤ max|x| / 254 · (1 + 2⁻¹⁰) per
  element (see `codec.py`). Tables written before float16 scales hold `list<float32>`
  (d + 4 bytes); both read.

Retrieval vectors are float32 in a float16-state table and float16 in an int8 one (they are
unit vectors; the FAISS file is built from them at the same precision, see indexes/vectors.py);
older int8 tables hold float32 vectors, and both read. The text column asks Lance for zstd
over mini-blocks (field metadata, honoured by new tables: 1.49 against 2.25 bytes/token of
English help text with Lance's default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from extok_rag.errors import IndexStoreError

DEFAULT_VECTOR_DIM = 384  # all-MiniLM-L6-v2
DEFAULT_STATE_DIM = 576  # SmolLM2-135M hidden size
STATE_ENCODINGS = ("float16", "int8")
# zstd level 9 over Lance's mini-blocks (Lance would pick per-value "full zip" for text this
# long, which compresses each chunk's text alone)
_TEXT_ENCODING = {
    "lance-encoding:compression": "zstd",
    "lance-encoding:compression-level": "9",
    "lance-encoding:structural-encoding": "miniblock",
}


def chunk_schema(
    dim: int = DEFAULT_VECTOR_DIM, d: int = DEFAULT_STATE_DIM, encoding: str = "float16"
) -> pa.Schema:
    """The chunk table's Arrow schema; `dim`: retrieval vector size, `d`: state size,
    `encoding`: "float16" or "int8" (see the module docstring)."""
    check_encoding(encoding)
    if encoding == "int8":
        states = [
            pa.field("states", pa.list_(pa.list_(pa.int8(), d))),  # (n_states, d) int8
            pa.field("state_scales", pa.list_(pa.float16())),  # (n_states,) float16
        ]
    else:
        states = [pa.field("states", pa.list_(pa.list_(pa.float16(), d)))]  # (n_states, d)
    return pa.schema(
        [
            pa.field("row_id", pa.int64(), nullable=False),
            pa.field("chunk_id", pa.string()),
            pa.field("doc_path", pa.string()),
            pa.field("doc_hash", pa.string()),
            pa.field("content_hash", pa.string()),
            pa.field("position", pa.int32()),  # chunk index within its document
            pa.field("text", pa.string(), metadata=_TEXT_ENCODING),
            pa.field("n_tokens", pa.int32()),
            pa.field("vector", pa.list_(vector_type(encoding), dim)),  # (dim,)
            *states,
        ]
    )


def vector_type(encoding: str) -> pa.DataType:
    """The retrieval vectors' element type in a new table with these states."""
    return pa.float16() if encoding == "int8" else pa.float32()


def check_encoding(encoding: str) -> None:
    if encoding not in STATE_ENCODINGS:
        raise IndexStoreError(
            f"unknown state encoding {encoding!r}; expected one of {', '.join(STATE_ENCODINGS)}"
        )


def bytes_per_state(d: int, encoding: str, scale_bytes: int = 2) -> int:
    """Stored bytes of one state vector of size d (int8: plus its `scale_bytes`-byte scale)."""
    return d + scale_bytes if encoding == "int8" else 2 * d


@dataclass(frozen=True, eq=False)
class ChunkRecord:
    """One chunk to store. `vector`: (dim,) float32; `states`: (n_states, d) float16."""

    chunk_id: str
    doc_path: str
    doc_hash: str
    content_hash: str
    position: int
    text: str
    n_tokens: int
    vector: np.ndarray
    states: np.ndarray


@dataclass(frozen=True, eq=False)
class StoredChunk(ChunkRecord):
    """A chunk read back from the table, with the row id it was stored under."""

    row_id: int

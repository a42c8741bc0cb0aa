"""Chunk records <-> the chunk table's Arrow rows, and `TableLayout`, which says what rows
must look like to enter one table (so a worker can make them without opening the table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from extok_rag.errors import IndexStoreError
from extok_rag.indexes.codec import (
    int8_states_from_arrow,
    int8_states_to_arrow,
    states_from_arrow,
    states_to_arrow,
    vectors_from_arrow,
    vectors_to_arrow,
)
from extok_rag.indexes.schema import ChunkRecord, StoredChunk, chunk_schema


def records_to_arrow(
    records: Sequence[ChunkRecord],
    row_ids: np.ndarray,
    dim: int,
    d: int,
    encoding: str = "float16",
    schema: pa.Schema | None = None,
) -> pa.Table:
    """Records + their row ids (n,) -> a pa.Table in `schema`, by default
    `chunk_schema(dim, d, encoding)` (an older table's own schema may have wider types)."""
    schema = schema or chunk_schema(dim, d, encoding)
    _check_shapes(records, dim, d)

    def strings(name: str) -> pa.Array:
        return pa.array([getattr(r, name) for r in records], type=pa.string())

    def ints(name: str) -> pa.Array:
        return pa.array(np.array([getattr(r, name) for r in records], dtype=np.int32))

    vectors = np.stack([r.vector for r in records]) if records else np.zeros((0, dim))  # (n, dim)
    columns = [
        pa.array(row_ids, type=pa.int64()),
        strings("chunk_id"),
        strings("doc_path"),
        strings("doc_hash"),
        strings("content_hash"),
        ints("position"),
        strings("text"),
        ints("n_tokens"),
        vectors_to_arrow(vectors.reshape(-1, dim), schema.field("vector").type.value_type),
    ]
    states = [r.states for r in records]  # n arrays (n_i, d)
    if encoding == "int8":
        columns.extend(int8_states_to_arrow(states, d))
    else:
        columns.append(states_to_arrow(states, d))
    columns = [c.cast(f.type) for c, f in zip(columns, schema, strict=True)]  # exact: widens
    return pa.Table.from_arrays(columns, schema=schema)


def _check_shapes(records: Sequence[ChunkRecord], dim: int, d: int) -> None:
    for r in records:
        if np.shape(r.vector) != (dim,):
            raise IndexStoreError(
                f"chunk {r.chunk_id}: vector has shape {np.shape(r.vector)}, table expects ({dim},)"
            )
        if np.ndim(r.states) != 2 or np.shape(r.states)[1] != d:
            raise IndexStoreError(
                f"chunk {r.chunk_id}: states have shape {np.shape(r.states)}, "
                f"table expects (n_states, {d})"
            )


def to_stored_chunks(table: pa.Table, dim: int, d: int, encoding: str) -> list[StoredChunk]:
    """A pa.Table in chunk_schema -> StoredChunk per row (arrays converted column-wise)."""
    vectors = vectors_from_arrow(table.column("vector"), dim)  # (n, dim) float32
    arrays = ["vector", "states"]
    if encoding == "int8":
        states = int8_states_from_arrow(table.column("states"), table.column("state_scales"), d)
        arrays.append("state_scales")
    else:
        states = states_from_arrow(table.column("states"), d)  # n views (n_i, d) float16
    scalars = table.drop_columns(arrays).to_pylist()
    return [
        StoredChunk(vector=vector, states=state, **row)
        for row, vector, state in zip(scalars, vectors, states, strict=True)
    ]


@dataclass(frozen=True)
class TableLayout:
    """What rows must look like to enter one chunk table: retrieval-vector size `dim`, state
    size `d`, state encoding and the table's Arrow schema (an older table's may have wider
    types). Picklable: a worker of a distributed engine turns records into the table's rows
    with it, without opening the table."""

    dim: int
    d: int
    encoding: str
    schema: pa.Schema

    def to_arrow(self, records: Sequence[ChunkRecord], row_ids: np.ndarray) -> pa.Table:
        """Records + their row ids (n,) int64 -> rows in this table's schema."""
        return records_to_arrow(records, row_ids, self.dim, self.d, self.encoding, self.schema)

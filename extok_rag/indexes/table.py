"""The chunk table: one LanceDB row per chunk, holding its text, retrieval vector and states.

Stored in `<index_dir>/lance/` as the table "chunks". Each row carries the chunk's extensible
embeddings ("states", (n_states, d)) as an Arrow `list<fixed_size_list<T, d>>`, so a chunk of
any length is one row and reading it back is a reshape. Two state encodings (the table's
schema says which):

- `float16`: T = float16, 2·d bytes per state, read back bit for bit;
- `int8`: T = int8 plus one scale per state ("state_scales", `list<float16>`), d + 2 bytes
  per state: symmetric per-vector quantisation, x ≈ q · scale with scale = max|x| / 127
  rounded up to float16, so |x - q · scale| ≤ scale / 2 ≤ max|x| / 254 · (1 + 2⁻¹⁰) per
  element. Tables written before float16 scales hold `list<float32>` (d + 4 bytes); both read.

Retrieval vectors ("vector") are float32 in a float16-state table and float16 in an int8 one
(they are unit vectors; the FAISS file is built from them at the same precision, see
indexes/vectors.py); older int8 tables hold float32 vectors, and both read. The text column
asks Lance for zstd over mini-blocks (field metadata, honoured by new tables: 1.49 against
2.25 bytes/token of English help text with Lance's default).

Rows are keyed by `row_id`, an int64 assigned here, increasing, and never reused after a delete
(the next id is kept in `<index_dir>/lance/row_ids.json`), so a FAISS index keyed by row id
never points at a different chunk than the one it was built from.

Every write makes a new LanceDB table version; `checkout(version)` gives a read-only snapshot
that keeps seeing that version while a writer moves on. `optimize(keep_from)` compacts the
table and deletes versions older than `keep_from`; `row_id` has a B-tree index, so `fetch`
reads only the rows it asks for.
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from extok_rag.config import write_json
from extok_rag.errors import IndexStoreError

TABLE_NAME = "chunks"
LANCE_DIR = "lance"
DEFAULT_VECTOR_DIM = 384  # all-MiniLM-L6-v2
DEFAULT_STATE_DIM = 576  # SmolLM2-135M hidden size
STATE_ENCODINGS = ("float16", "int8")
_ROW_IDS_FILE = "row_ids.json"
# zstd level 9 over Lance's mini-blocks (Lance would pick per-value "full zip" for text this
# long, which compresses each chunk's text alone)
_TEXT_ENCODING = {
    "lance-encoding:compression": "zstd",
    "lance-encoding:compression-level": "9",
    "lance-encoding:structural-encoding": "miniblock",
}
_NEVER = timedelta(days=36_500)  # a cleanup age that deletes nothing
_MISSING_EXTRA = "LanceDB is not installed; install it with pip install 'extok-rag[cpu]'"


def chunk_schema(
    dim: int = DEFAULT_VECTOR_DIM, d: int = DEFAULT_STATE_DIM, encoding: str = "float16"
) -> pa.Schema:
    """The chunk table's Arrow schema; `dim`: retrieval vector size, `d`: state size,
    `encoding`: "float16" or "int8" (see the module docstring)."""
    check_encoding(encoding)
    if encoding == "int8":
        states = [
            pa.field("states", pa.list_(pa.list_(pa.int8(), d))),
            pa.field("state_scales", pa.list_(pa.float16())),
        ]
    else:
        states = [pa.field("states", pa.list_(pa.list_(pa.float16(), d)))]
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
            pa.field("vector", pa.list_(vector_type(encoding), dim)),
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


# --- numpy <-> Arrow, vectorised: one concatenate per batch, never a loop per value ---


def vectors_to_arrow(
    vectors: np.ndarray, value_type: pa.DataType | None = None
) -> pa.FixedSizeListArray:
    """(n, dim) float -> fixed_size_list<value_type, dim>[n] (float32, the default, or float16)."""
    value_type = value_type or pa.float32()
    flat = np.ascontiguousarray(vectors, dtype=value_type.to_pandas_dtype()).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, value_type), vectors.shape[1])


def vectors_from_arrow(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """fixed_size_list<T, dim>[n] -> (n, dim) float32 (exact for T = float16 or float32)."""
    array = _combine(column)
    flat = array.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(len(array), dim)


def states_to_arrow(states: Sequence[np.ndarray], d: int) -> pa.ListArray:
    """n arrays of shape (n_i, d) float16 -> list<fixed_size_list<float16, d>>[n]."""
    lengths = np.fromiter((s.shape[0] for s in states), dtype=np.int64, count=len(states))
    offsets = np.zeros(len(states) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    if len(states):
        flat = np.concatenate([np.asarray(s, dtype=np.float16).reshape(-1) for s in states])
    else:
        flat = np.zeros(0, dtype=np.float16)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float16()), d)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def states_from_arrow(column: pa.ChunkedArray | pa.Array, d: int) -> list[np.ndarray]:
    """list<fixed_size_list<T, d>>[n] -> n read-only (n_i, d) views of dtype T."""
    array = _combine(column)
    if len(array) == 0:
        return []
    offsets = array.offsets.to_numpy()
    offsets = offsets - offsets[0]  # a sliced array's offsets need not start at 0
    flat = array.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
    return np.split(flat, offsets[1:-1])


def quantize_int8(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float -> (q (n, d) int8, scales (n,) float16) with x ≈ q · scale per row:
    scale = max|x_row| / 127 rounded up to float16 (so no |q| exceeds 127), hence
    |x - q · scale| ≤ scale / 2. IndexStoreError if not finite or beyond float16's range."""
    x = np.asarray(states, dtype=np.float32)
    if not np.isfinite(x).all():
        raise IndexStoreError("states hold inf or NaN: they cannot be stored as int8")
    exact = np.abs(x).max(axis=1, initial=0.0) / np.float32(127)  # (n,) float32
    scales = exact.astype(np.float16)
    low = scales.astype(np.float32) < exact
    scales[low] = np.nextafter(scales[low], np.float16(np.inf))
    if not np.isfinite(scales).all():
        raise IndexStoreError("states exceed float16's range: they cannot be stored as int8")
    divisor = np.where(scales > 0, scales.astype(np.float32), np.float32(1))[:, None]
    q = np.clip(np.rint(x / divisor), -127, 127).astype(np.int8)
    return q, scales


def dequantize_int8(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(n, d) int8, (n,) float16 or float32 -> (n, d) float32."""
    return q.astype(np.float32) * np.asarray(scales, dtype=np.float32)[:, None]


def int8_states_to_arrow(states: Sequence[np.ndarray], d: int) -> tuple[pa.ListArray, pa.ListArray]:
    """n arrays (n_i, d) -> (list<fixed_size_list<int8, d>>[n], list<float16>[n] scales)."""
    quantized = [quantize_int8(np.asarray(s).reshape(-1, d)) for s in states]
    offsets = np.zeros(len(states) + 1, dtype=np.int32)
    np.cumsum([q.shape[0] for q, _ in quantized], out=offsets[1:])
    flat = np.concatenate([q.reshape(-1) for q, _ in quantized]) if quantized else np.zeros(0)
    flat_scales = np.concatenate([sc for _, sc in quantized]) if quantized else np.zeros(0)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(np.int8), pa.int8()), d)
    scales = pa.array(flat_scales.astype(np.float16), pa.float16())
    offsets_array = pa.array(offsets)
    return (
        pa.ListArray.from_arrays(offsets_array, inner),
        pa.ListArray.from_arrays(offsets_array, scales),
    )


def int8_states_from_arrow(
    states: pa.ChunkedArray | pa.Array, scales: pa.ChunkedArray | pa.Array, d: int
) -> list[np.ndarray]:
    """The columns of `int8_states_to_arrow` -> n dequantised (n_i, d) float32 arrays."""
    q = states_from_arrow(states, d)  # the same list layout, int8 values
    scale_array = _combine(scales)
    if len(scale_array) == 0:
        return []
    offsets = scale_array.offsets.to_numpy()
    flat = scale_array.flatten().to_numpy(zero_copy_only=False)
    per_chunk = np.split(flat, offsets[1:-1] - offsets[0])
    return [dequantize_int8(qi, si) for qi, si in zip(q, per_chunk, strict=True)]


def _combine(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


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

    vectors = np.stack([r.vector for r in records]) if records else np.zeros((0, dim))
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
    states = [r.states for r in records]
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


# --- the table ---


def _connect(lance_dir: Path):
    try:
        import lancedb
    except ImportError as exc:
        raise IndexStoreError(_MISSING_EXTRA) from exc
    return lancedb.connect(str(lance_dir))


class ChunkTable:
    """The "chunks" LanceDB table of one index. Build with `create` or `open`, not directly."""

    def __init__(self, index_dir: Path, table, *, snapshot: bool) -> None:
        self.index_dir = Path(index_dir)
        self._table = table  # lancedb.table.LanceTable
        self._snapshot = snapshot
        vector_field = table.schema.field("vector").type
        self.dim: int = vector_field.list_size
        self.vector_dtype = np.dtype(vector_field.value_type.to_pandas_dtype())  # float32/16
        self.vector_precision: str = self.vector_dtype.name  # "float32" or "float16"
        self.d: int = table.schema.field("states").type.value_type.list_size
        value_type = table.schema.field("states").type.value_type.value_type
        self.encoding: str = "int8" if pa.types.is_int8(value_type) else "float16"
        scales = table.schema.field("state_scales") if self.encoding == "int8" else None
        scale_bytes = scales.type.value_type.byte_width if scales is not None else 0
        self.bytes_per_state: int = bytes_per_state(self.d, self.encoding, scale_bytes)

    # -- opening --

    @classmethod
    def create(
        cls,
        index_dir: Path,
        dim: int = DEFAULT_VECTOR_DIM,
        d: int = DEFAULT_STATE_DIM,
        *,
        encoding: str = "float16",
        overwrite: bool = False,
    ) -> ChunkTable:
        """Create an empty table in `<index_dir>/lance/` storing states as `encoding`;
        IndexStoreError if one exists."""
        lance_dir = Path(index_dir) / LANCE_DIR
        if _table_path(index_dir).exists() and not overwrite:
            raise IndexStoreError(f"a chunk table already exists in {lance_dir}")
        lance_dir.mkdir(parents=True, exist_ok=True)
        db = _connect(lance_dir)
        mode = "overwrite" if overwrite else "create"
        table = db.create_table(TABLE_NAME, schema=chunk_schema(dim, d, encoding), mode=mode)
        write_json(lance_dir / _ROW_IDS_FILE, {"next_row_id": 0})
        return cls(index_dir, table, snapshot=False)

    @classmethod
    def open(cls, index_dir: Path, version: int | None = None) -> ChunkTable:
        """Open the table at its latest version (writable) or at `version` (read-only)."""
        if not _table_path(index_dir).is_dir():
            raise IndexStoreError(f"no chunk table in {Path(index_dir) / LANCE_DIR}")
        table = _connect(Path(index_dir) / LANCE_DIR).open_table(TABLE_NAME)
        if version is not None:
            try:
                table.checkout(version)
            except ValueError as exc:
                raise IndexStoreError(f"chunk table has no version {version} ({exc})") from exc
        return cls(index_dir, table, snapshot=version is not None)

    def checkout(self, version: int | None = None) -> ChunkTable:
        """A read-only snapshot at `version` (default: the current one) that later writes to
        the table do not change."""
        return ChunkTable.open(self.index_dir, self.version if version is None else version)

    @property
    def version(self) -> int:
        """The LanceDB table version this handle sees; every write adds one."""
        return self._table.version

    # -- writing --

    def add(self, records: Sequence[ChunkRecord]) -> np.ndarray:
        """Append chunks; returns their new row ids, (n,) int64, in the order given."""
        self._check_writable()
        start = self.next_row_id()
        row_ids = np.arange(start, start + len(records), dtype=np.int64)
        if len(records):
            self._table.add(self.layout.to_arrow(records, row_ids))
            write_json(self._row_ids_path(), {"next_row_id": int(start + len(records))})
        return row_ids

    def append_stream(self, batches: Iterable[pa.Table | pa.RecordBatch]) -> int:
        """Append rows already in `layout` (e.g. made by workers of a distributed engine),
        streamed, in ONE table commit; returns how many. Their row ids must run on from
        `next_row_id()` without gaps, in the order given (IndexStoreError otherwise), so the
        table reads exactly as if `add` had assigned them. Nothing is committed unless the
        whole stream is written; an error raised while producing `batches` is re-raised as
        it was (LanceDB would wrap it)."""
        self._check_writable()
        schema = self._table.schema
        check = _RowIdCheck(self.next_row_id())
        stream = iter(check.batches(batches, schema))
        first = next(stream, None)
        if first is None:
            return 0
        reader = pa.RecordBatchReader.from_batches(schema, itertools.chain([first], stream))
        try:
            self._table.add(reader)
        except Exception:
            if check.error is not None:
                raise check.error from None
            raise
        write_json(self._row_ids_path(), {"next_row_id": check.next})
        return check.next - check.start

    @property
    def layout(self) -> TableLayout:
        # A table written by an older release keeps its own (wider) types.
        return TableLayout(self.dim, self.d, self.encoding, self._table.schema)

    def delete_docs(self, paths: Iterable[str]) -> None:
        """Delete every chunk of the documents at `paths` (unknown paths are ignored)."""
        from lancedb.expr import col

        self._check_writable()
        paths = list(paths)
        if paths:
            self._table.delete(col("doc_path").isin(paths))

    def restore(self, version: int) -> None:
        """Make the latest version hold what `version` held (a new version; history is kept),
        e.g. to drop writes no manifest ever committed."""
        self._check_writable()
        self._table.restore(version)

    def ensure_row_id_index(self) -> bool:
        """Give `row_id` a B-tree index (so `fetch` looks rows up instead of scanning), once
        the table has rows; True if this made one (a new table version)."""
        from lancedb.index import BTree

        self._check_writable()
        if self.count() == 0 or any(i.columns == ["row_id"] for i in self._table.list_indices()):
            return False
        self._table.create_index("row_id", config=BTree())
        return True

    def data_bytes(self) -> int:
        """Bytes of the data files this version reads (not older versions' files)."""
        return int(self._table.stats()["total_bytes"])

    def fragments(self) -> int:
        """How many data fragments (files written by separate commits) this version has."""
        return int(self._table.stats()["fragment_stats"]["num_fragments"])

    def optimize(self, keep_from: int) -> None:
        """Compact small fragments (dropping deleted rows' data), bring the row-id index up to
        date, then delete the files of every version older than `keep_from`: `keep_from`
        itself, every later version and the latest stay readable. Only for the index's one
        writer (it deletes files no version refers to, which a second writer may be writing).
        """
        self._check_writable()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LanceDB's "concurrent readers" caution
            # Two calls: LanceDB measures the cleanup age after compacting, which can take
            # long; the second call has nothing left to compact, so its clock is ours.
            self._table.optimize(cleanup_older_than=_NEVER)
            self._table.optimize(cleanup_older_than=self._age(keep_from), delete_unverified=True)

    def has_version(self, version: int | None) -> bool:
        return version is not None and any(
            v["version"] == version for v in self._table.list_versions()
        )

    def _age(self, version: int) -> timedelta:
        """How long ago `version` was written, plus a second. LanceDB's version timestamps
        are naive, so the larger of the local and the UTC reading of now is taken: the age
        is never underestimated, so `optimize` never deletes `version` itself."""
        stamps = {v["version"]: v["timestamp"] for v in self._table.list_versions()}
        if version not in stamps:
            raise IndexStoreError(f"chunk table has no version {version} to keep")
        stamp = stamps[version].replace(tzinfo=None)
        now = max(datetime.now(), datetime.now(UTC).replace(tzinfo=None))
        return max(now - stamp, timedelta(0)) + timedelta(seconds=1)

    # -- reading --

    def counts(self) -> tuple[int, int, int]:
        """(documents, chunks, tokens) in this version."""
        table = self._scan(["doc_path", "n_tokens"])
        tokens = int(table.column("n_tokens").to_numpy().sum())
        return len(set(table.column("doc_path").to_pylist())), table.num_rows, tokens

    def token_counts(self) -> np.ndarray:
        """LLM tokens of every chunk in this version, (N,) int32."""
        return self._scan(["n_tokens"]).column("n_tokens").to_numpy()

    def count(self) -> int:
        return self._table.count_rows()

    def max_row_id(self) -> int:
        """The largest row id stored in this version, -1 if there is none."""
        row_ids = self._scan(["row_id"]).column("row_id").to_numpy()
        return int(row_ids.max()) if len(row_ids) else -1

    def next_row_id(self) -> int:
        """The row id the next added chunk gets: above every id ever assigned."""
        path = self._row_ids_path()
        try:
            saved = int(json.loads(path.read_text())["next_row_id"])
        except FileNotFoundError:
            saved = 0
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexStoreError(f"row id counter {path} is corrupt ({exc!r})") from exc
        # An add that crashed before saving the counter still left its rows in the table.
        return max(saved, self.max_row_id() + 1)

    def doc_hashes(self) -> dict[str, str]:
        """{doc_path: doc_hash} over every stored document."""
        table = self._scan(["doc_path", "doc_hash"])
        paths = table.column("doc_path").to_pylist()
        return dict(zip(paths, table.column("doc_hash").to_pylist(), strict=True))

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All retrieval vectors: (row_ids (N,) int64, vectors (N, dim) float32)."""
        table = self._scan(["row_id", "vector"])
        row_ids = table.column("row_id").to_numpy()
        return row_ids, vectors_from_arrow(table.column("vector"), self.dim)

    def fetch(self, row_ids: Sequence[int] | np.ndarray) -> list[StoredChunk]:
        """The chunks with these row ids, in the order asked; IndexStoreError if one is absent.

        States come back as read-only (n_states, d) float16 views into one Arrow buffer, or
        for an int8 table as dequantised (n_states, d) float32 arrays.
        """

        wanted = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        if len(wanted) == 0:
            return []
        unique = np.unique(wanted)
        table = self._fetch_query(unique).to_arrow()
        stored = table.column("row_id").to_numpy()
        order = np.argsort(stored)
        missing = np.setdiff1d(unique, stored)
        if len(missing):
            shown = ", ".join(str(i) for i in missing[:5])
            raise IndexStoreError(f"row ids not in chunk table version {self.version}: {shown}")
        take = order[np.searchsorted(stored, wanted, sorter=order)]
        return _to_stored_chunks(table.take(pa.array(take)), self.dim, self.d, self.encoding)

    # -- internals --

    def _fetch_query(self, row_ids: np.ndarray):
        """The LanceDB query `fetch` runs: a B-tree lookup once `ensure_row_id_index` ran."""
        from lancedb.expr import col

        return self._table.search().limit(None).where(col("row_id").isin([int(i) for i in row_ids]))

    def _scan(self, columns: list[str] | None, where=None) -> pa.Table:
        query = self._table.search().limit(None)
        if columns is not None:
            query = query.select(columns)
        if where is not None:
            query = query.where(where)
        return query.to_arrow()

    def _check_writable(self) -> None:
        if self._snapshot:
            raise IndexStoreError(
                f"chunk table snapshot at version {self.version} is read-only; "
                "open the latest version to write"
            )

    def _row_ids_path(self) -> Path:
        return self.index_dir / LANCE_DIR / _ROW_IDS_FILE


class _RowIdCheck:
    """Passes batches through while checking that their row ids count up from `start`; keeps
    the first error raised by the producer of the batches (see `append_stream`)."""

    def __init__(self, start: int) -> None:
        self.start = self.next = start
        self.error: BaseException | None = None

    def batches(
        self, batches: Iterable[pa.Table | pa.RecordBatch], schema: pa.Schema
    ) -> Iterator[pa.RecordBatch]:
        try:
            for item in batches:
                table = item if isinstance(item, pa.Table) else pa.Table.from_batches([item])
                for batch in table.cast(schema).to_batches():
                    self._check(batch.column("row_id").to_numpy())
                    yield batch
        except BaseException as exc:
            self.error = exc
            raise

    def _check(self, row_ids: np.ndarray) -> None:
        expected = np.arange(self.next, self.next + len(row_ids), dtype=np.int64)
        if not np.array_equal(row_ids, expected):
            raise IndexStoreError(
                f"rows to append carry row ids {row_ids[:3].tolist()}…, expected them to run "
                f"on from {self.next}"
            )
        self.next += len(row_ids)


def _table_path(index_dir: Path) -> Path:
    return Path(index_dir) / LANCE_DIR / f"{TABLE_NAME}.lance"


def _to_stored_chunks(table: pa.Table, dim: int, d: int, encoding: str) -> list[StoredChunk]:
    """A pa.Table in chunk_schema -> StoredChunk per row (arrays converted column-wise)."""
    vectors = vectors_from_arrow(table.column("vector"), dim)
    arrays = ["vector", "states"]
    if encoding == "int8":
        states = int8_states_from_arrow(table.column("states"), table.column("state_scales"), d)
        arrays.append("state_scales")
    else:
        states = states_from_arrow(table.column("states"), d)
    scalars = table.drop_columns(arrays).to_pylist()
    return [
        StoredChunk(vector=vector, states=state, **row)
        for row, vector, state in zip(scalars, vectors, states, strict=True)
    ]

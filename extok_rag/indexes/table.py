"""The chunk table: one LanceDB row per chunk, holding its text, retrieval vector and states.

Stored in `<index_dir>/lance/` as the table "chunks". Its columns and state encodings are in
`schema.py`, the numpy <-> Arrow conversions in `codec.py`, records <-> rows in `rows.py`;
this module holds `ChunkTable`, the operations on one table.

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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from extok_rag.config import write_json
from extok_rag.errors import IndexStoreError

# Re-exported: these lived here before the split, and callers import them from here.
from extok_rag.indexes.codec import (
    dequantize_int8,
    int8_states_from_arrow,
    int8_states_to_arrow,
    quantize_int8,
    states_from_arrow,
    states_to_arrow,
    vectors_from_arrow,
    vectors_to_arrow,
)
from extok_rag.indexes.rows import TableLayout, records_to_arrow, to_stored_chunks
from extok_rag.indexes.schema import (
    DEFAULT_STATE_DIM,
    DEFAULT_VECTOR_DIM,
    STATE_ENCODINGS,
    ChunkRecord,
    StoredChunk,
    bytes_per_state,
    check_encoding,
    chunk_schema,
    vector_type,
)

__all__ = [
    "DEFAULT_STATE_DIM",
    "DEFAULT_VECTOR_DIM",
    "LANCE_DIR",
    "STATE_ENCODINGS",
    "TABLE_NAME",
    "ChunkRecord",
    "ChunkTable",
    "StoredChunk",
    "TableLayout",
    "bytes_per_state",
    "check_encoding",
    "chunk_schema",
    "dequantize_int8",
    "int8_states_from_arrow",
    "int8_states_to_arrow",
    "quantize_int8",
    "records_to_arrow",
    "states_from_arrow",
    "states_to_arrow",
    "vector_type",
    "vectors_from_arrow",
    "vectors_to_arrow",
]

TABLE_NAME = "chunks"
LANCE_DIR = "lance"
_ROW_IDS_FILE = "row_ids.json"
_NEVER = timedelta(days=36_500)  # a cleanup age that deletes nothing
_MISSING_EXTRA = "LanceDB is not installed; install it with pip install 'extok-rag[cpu]'"


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
        self._text_index: bool | None = None  # a snapshot's answer to has_text_index, kept
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

    def ensure_text_index(self) -> bool:
        """Give `text` LanceDB's full-text (BM25) index, once the table has rows; True if this
        made one (a new table version). Rows added later are searched too (LanceDB scans what
        its index has not seen yet) and `optimize` folds them in."""
        from lancedb.index import FTS

        self._check_writable()
        if self.count() == 0 or self.has_text_index():
            return False
        self._table.create_index("text", config=FTS())
        return True

    def has_text_index(self) -> bool:
        """Whether `text` has a full-text index. A snapshot (a pinned version) lists its
        indexes once: readers ask before every text search."""
        if self._snapshot and self._text_index is not None:
            return self._text_index
        found = any(i.index_type == "FTS" for i in self._table.list_indices())
        if self._snapshot:
            self._text_index = found
        return found

    def search_text(self, query: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n rows by BM25 over `text`: (row_ids (m,) int64, scores (m,) float32), best
        first; m = 0 for a query of stop words only."""
        search = self._table.search(query, query_type="fts").select(["row_id", "_score"])
        hits = search.limit(n).to_arrow()
        if hits.num_rows == 0:
            empty = np.zeros(0)
            return empty.astype(np.int64), empty.astype(np.float32)
        row_ids = hits.column("row_id").to_numpy().astype(np.int64)
        return row_ids, hits.column("_score").to_numpy().astype(np.float32)

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
        return to_stored_chunks(table.take(pa.array(take)), self.dim, self.d, self.encoding)

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

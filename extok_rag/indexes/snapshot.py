"""The reader's side of an index: a committed, consistent snapshot (manifest, table at the
manifest's version, FAISS vectors), opened without the indexer, and healed when its FAISS file is
missing or corrupt. Readers (`ask`, `serve`, `eval qa`, the LlamaIndex retriever) import this,
never `extok_rag.indexing`. Nothing here imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extok_rag.errors import IndexBusyError, IndexStoreError
from extok_rag.indexes.lock import WriterLock
from extok_rag.indexes.manifest import Manifest, read_manifest
from extok_rag.indexes.table import ChunkTable
from extok_rag.indexes.vectors import VectorIndex

_log = logging.getLogger("extok_rag.indexing")


@dataclass(frozen=True)
class IndexSnapshot:
    """A committed, consistent view of an index: its manifest, table and vectors."""

    manifest: Manifest
    table: ChunkTable
    vectors: VectorIndex


def open_index(index_dir: Path, *, notice: Callable[[str], None] | None = None) -> IndexSnapshot:
    """The index as its manifest last committed it (table at the manifest's version).

    A missing or corrupt FAISS file is rebuilt from the table's vectors (every vector is also
    in the table), with a one-line notice passed to `notice` (default: a warning on the
    `extok_rag.indexing` logger), and saved back when no writer holds the index.
    IndexStoreError if the manifest or the table version it names is gone.
    """
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    for attempt in range(2):
        table = open_committed_table(index_dir, manifest)
        try:
            vectors = VectorIndex.load(index_dir / manifest.vector_file)
        except IndexStoreError as exc:
            latest = read_manifest(index_dir)
            if attempt == 0 and latest != manifest:  # a writer committed meanwhile: read again
                manifest = latest
                continue
            vectors = heal_vectors(index_dir, manifest, table, str(exc), notice or _log.warning)
        return IndexSnapshot(manifest, table, vectors)
    raise AssertionError("unreachable")


def open_committed_table(index_dir: Path, manifest: Manifest) -> ChunkTable:
    """The table at the manifest's version, or an IndexStoreError naming the fix."""
    if manifest.table_version is None:
        raise IndexStoreError(f"index {index_dir} has no committed table version; rebuild it")
    try:
        return ChunkTable.open(index_dir, manifest.table_version)
    except IndexStoreError as exc:
        raise IndexStoreError(
            f"index {index_dir}: its manifest names chunk-table version "
            f"{manifest.table_version}, which is missing ({exc}); rebuild the index with "
            f"`extok-rag index CORPUS --index {index_dir} --rebuild`"
        ) from exc


def heal_vectors(
    index_dir: Path, manifest: Manifest, table: ChunkTable, reason: str, notice: Callable
) -> VectorIndex:
    """Rebuild the FAISS index of `manifest` from `table` (at its version); save it unless a
    writer holds the index (then the next commit writes a fresh one anyway)."""
    row_ids, vectors = table.vectors()
    index = VectorIndex.build(row_ids, vectors, precision=table.vector_precision)
    saved = _save_unless_busy(index, index_dir / manifest.vector_file)
    reason = reason.removesuffix("; rebuild it with --rebuild").removesuffix(
        "; build the index first"
    )
    where = "and saved it" if saved else "(in memory: a writer holds the index)"
    notice(f"notice: {reason}; rebuilt it from the chunk table's {len(row_ids)} vectors {where}")
    return index


def _save_unless_busy(index: VectorIndex, path: Path) -> bool:
    try:
        with WriterLock(path.parent):
            index.save(path)
    except (IndexBusyError, OSError):  # another writer, or a read-only index folder
        return False
    return True


def disk_bytes(index_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(index_dir).rglob("*") if p.is_file())


INDEXES_DIR = Path("indexes")  # default parent of named indexes, relative to the working dir


def resolve_index_dir(index_path: Path | None) -> Path:
    """A folder as given, a name under ./indexes/, or the only index under ./indexes/."""
    if index_path is not None:
        if (index_path / "manifest.json").is_file() or index_path.is_absolute():
            return index_path
        named = INDEXES_DIR / index_path
        return named if named.is_dir() else index_path
    found = sorted(p.parent for p in INDEXES_DIR.glob("*/manifest.json"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise IndexStoreError(f"no index under ./{INDEXES_DIR}/; build one with `extok-rag index`")
    names = ", ".join(p.name for p in found)
    raise IndexStoreError(f"several indexes under ./{INDEXES_DIR}/ ({names}); name one")

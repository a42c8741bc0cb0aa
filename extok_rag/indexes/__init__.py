"""Index storage: a manifest, a LanceDB chunk table (text, vectors, extensible embeddings) and a
FAISS vector index keyed by chunk row id. Nothing here imports torch.

Layout of an index folder::

    <index_dir>/manifest.json     which models built it, stride, chunking settings, counts
    <index_dir>/lance/chunks.lance  the chunk table (LanceDB, versioned)
    <index_dir>/lance/row_ids.json  the next row id to assign
    <index_dir>/vectors.faiss     the vector index (path chosen by the caller)
    <index_dir>/writer.lock       the one-writer lock (flock) and its holder's pid

Readers open a committed snapshot with `open_index` (`snapshot.py`); the writer is
`extok_rag.indexing`, which readers never import.
"""

from extok_rag.indexes.lock import LockHolder, WriterLock, read_holder
from extok_rag.indexes.manifest import (
    FORMAT_VERSION,
    IndexCounts,
    Manifest,
    ModelIdentity,
    check_compatible,
    read_manifest,
    write_manifest,
)
from extok_rag.indexes.rows import TableLayout
from extok_rag.indexes.schema import (
    STATE_ENCODINGS,
    ChunkRecord,
    StoredChunk,
    bytes_per_state,
    chunk_schema,
)
from extok_rag.indexes.snapshot import (
    IndexSnapshot,
    disk_bytes,
    heal_vectors,
    open_index,
    resolve_index_dir,
)
from extok_rag.indexes.table import ChunkTable
from extok_rag.indexes.vectors import DEFAULT_HNSW_THRESHOLD, VectorIndex

__all__ = [
    "DEFAULT_HNSW_THRESHOLD",
    "FORMAT_VERSION",
    "STATE_ENCODINGS",
    "ChunkRecord",
    "ChunkTable",
    "IndexCounts",
    "IndexSnapshot",
    "LockHolder",
    "Manifest",
    "ModelIdentity",
    "StoredChunk",
    "TableLayout",
    "VectorIndex",
    "WriterLock",
    "bytes_per_state",
    "check_compatible",
    "chunk_schema",
    "disk_bytes",
    "heal_vectors",
    "open_index",
    "read_holder",
    "read_manifest",
    "resolve_index_dir",
    "write_manifest",
]

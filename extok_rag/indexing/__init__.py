"""The offline indexer: corpus files -> chunks -> retrieval vectors + extensible-embedding states
-> an index folder (LanceDB chunk table, FAISS file, manifest). See docs/indexing.md.

    build_index(corpus, index_dir, IndexModels(llm), IndexSettings())  # write / update
    build_index(..., engine=RayEngine(...))   # the same stages on Ray (integrations/ray_index)

Readers open a committed snapshot with `extok_rag.indexes.open_index` (re-exported here for
writers and tests).
"""

from extok_rag.indexes.snapshot import IndexSnapshot, disk_bytes, open_index
from extok_rag.indexing.build import (
    DEFAULT_STRIDE,
    IndexEngine,
    IndexModels,
    IndexPlan,
    IndexProgress,
    IndexReport,
    IndexSettings,
    IndexTarget,
    LocalEngine,
    WriteJob,
    build_index,
)

__all__ = [
    "DEFAULT_STRIDE",
    "IndexEngine",
    "IndexModels",
    "IndexPlan",
    "IndexProgress",
    "IndexReport",
    "IndexSettings",
    "IndexSnapshot",
    "IndexTarget",
    "LocalEngine",
    "WriteJob",
    "build_index",
    "disk_bytes",
    "open_index",
]

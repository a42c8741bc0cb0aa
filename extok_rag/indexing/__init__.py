"""The offline indexer: corpus files -> chunks -> retrieval vectors + extensible-embedding states
-> an index folder (LanceDB chunk table, FAISS file, manifest). See docs/indexing.md.

    build_index(corpus, index_dir, IndexModels(llm), IndexSettings())  # write / update
    build_index(..., engine=RayEngine(...))   # the same stages on Ray (indexing/ray_engine.py)
    prepare_run(IndexRequest(corpus, ...))(progress)   # what `extok-rag index` does

A run, module by module: settings (what it writes with) -> resume (where the last run left
the table) -> plan -> engine (read, chunk, encode, append; `stages`, `encoding`) -> commit.
Ray is optional: `ray_engine` imports it only when a run starts, never on import.

Readers open a committed snapshot with `extok_rag.indexes.open_index` (re-exported here for
writers and tests).
"""

from extok_rag.indexes import IndexSnapshot, disk_bytes, open_index
from extok_rag.indexing.build import build_index
from extok_rag.indexing.engine import IndexEngine, LocalEngine, WriteJob
from extok_rag.indexing.models import IndexModels
from extok_rag.indexing.plan import IndexPlan
from extok_rag.indexing.report import IndexProgress, IndexReport
from extok_rag.indexing.request import IndexRequest, PreparedRun, prepare_run
from extok_rag.indexing.settings import (
    DEFAULT_STATE_ENCODING,
    DEFAULT_STRIDE,
    IndexSettings,
    IndexTarget,
)

__all__ = [
    "DEFAULT_STATE_ENCODING",
    "DEFAULT_STRIDE",
    "IndexEngine",
    "IndexModels",
    "IndexPlan",
    "IndexProgress",
    "IndexReport",
    "IndexRequest",
    "IndexSettings",
    "IndexSnapshot",
    "IndexTarget",
    "LocalEngine",
    "PreparedRun",
    "WriteJob",
    "build_index",
    "disk_bytes",
    "open_index",
    "prepare_run",
]

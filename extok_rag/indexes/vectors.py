"""The vector index: FAISS inner-product search over retrieval vectors, keyed by chunk row id.

Exact (flat) search below `hnsw_threshold` vectors, HNSW (M=32) at or above it. Vectors are
L2-normalised, so inner product is cosine similarity. The index is an `IndexIDMap2`, so search
answers chunk-table row ids directly. Where the faiss GPU build sees a GPU, flat search runs on
it (FAISS has no GPU HNSW); the index is always saved as a CPU index.

Vectors are kept at float32, or at float16 (FAISS's fp16 scalar quantiser, half the file) for
an index whose chunk table stores them at float16 (int8-state indexes), so a rebuild from the
table gives the same index.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import numpy as np

from extok_rag.errors import IndexStoreError

DEFAULT_HNSW_THRESHOLD = 50_000
DEFAULT_EF_SEARCH = 64
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
_MISSING_EXTRA = "FAISS is not installed; install it with pip install 'extok-rag[cpu]'"

IndexKind = Literal["flat", "hnsw"]
Precision = Literal["float32", "float16"]


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise IndexStoreError(_MISSING_EXTRA) from exc
    return faiss


class VectorIndex:
    """Inner-product search over (row_id, vector) pairs. Make with `build` or `load`."""

    def __init__(self, index, *, ef_search: int = DEFAULT_EF_SEARCH) -> None:
        self._index = index  # faiss.IndexIDMap2 over IndexFlatIP or IndexHNSWFlat, on CPU
        self._gpu_index = None  # a GPU copy for flat search, made on first search
        self._gpu_resources = None  # kept alive as long as the GPU copy
        self.ef_search = ef_search

    @classmethod
    def empty(
        cls,
        dim: int,
        kind: IndexKind = "flat",
        *,
        precision: Precision = "float32",
        ef_search: int = DEFAULT_EF_SEARCH,
    ) -> VectorIndex:
        faiss = _faiss()
        ip = faiss.METRIC_INNER_PRODUCT
        fp16 = faiss.ScalarQuantizer.QT_fp16
        if kind == "hnsw" and precision == "float16":
            inner = faiss.IndexHNSWSQ(dim, fp16, HNSW_M, ip)
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, HNSW_M, ip)
        elif precision == "float16":
            inner = faiss.IndexScalarQuantizer(dim, fp16, ip)
        else:
            inner = faiss.IndexFlatIP(dim)
        if kind == "hnsw":
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.is_trained = True  # fp16 needs no training (its range is the type's)
        return cls(faiss.IndexIDMap2(inner), ef_search=ef_search)

    @classmethod
    def build(
        cls,
        row_ids: np.ndarray,
        vectors: np.ndarray,
        *,
        hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
        ef_search: int = DEFAULT_EF_SEARCH,
        precision: Precision = "float32",
    ) -> VectorIndex:
        """Index `vectors` (N, dim) under `row_ids` (N,) int64, kept at `precision`; HNSW if
        N >= threshold."""
        kind: IndexKind = "hnsw" if len(row_ids) >= hnsw_threshold else "flat"
        index = cls.empty(np.shape(vectors)[1], kind, precision=precision, ef_search=ef_search)
        index.add(row_ids, vectors)
        return index

    # -- properties --

    @property
    def kind(self) -> IndexKind:
        inner = _faiss().downcast_index(self._index.index)
        return "hnsw" if hasattr(inner, "hnsw") else "flat"

    @property
    def precision(self) -> Precision:
        inner = _faiss().downcast_index(self._index.index)
        storage = _faiss().downcast_index(inner.storage) if hasattr(inner, "hnsw") else inner
        return "float16" if hasattr(storage, "sq") else "float32"

    @property
    def dim(self) -> int:
        return self._index.d

    def __len__(self) -> int:
        return self._index.ntotal

    # -- add and search --

    def add(self, row_ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add `vectors` (n, dim) float32 under `row_ids` (n,) int64."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        row_ids = np.ascontiguousarray(row_ids, dtype=np.int64)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(row_ids) != len(vectors):
            raise IndexStoreError(
                f"cannot add {len(row_ids)} row ids with vectors of shape {vectors.shape} "
                f"to a {self.dim}-d index"
            )
        self._index.add_with_ids(vectors, row_ids)
        self._gpu_index = None

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n by inner product for `queries` (q, dim).

        Returns (row_ids (q, m) int64, scores (q, m) float32), best first, m = min(n, len).
        A slot HNSW could not fill has row id -1 and score -inf.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        n = min(n, len(self))
        if n <= 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.int64), empty.astype(np.float32)
        scores, row_ids = self._searcher().search(queries, n)
        scores[row_ids < 0] = -np.inf
        return row_ids, scores

    def _searcher(self):
        """The index to search: a GPU copy for flat search where FAISS sees a GPU."""
        faiss = _faiss()
        if self.kind == "hnsw":
            faiss.downcast_index(self._index.index).hnsw.efSearch = self.ef_search
            return self._index
        if self._gpu_index is None and self.precision == "float32" and _num_gpus(faiss) > 0:
            self._gpu_resources = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)
        return self._index if self._gpu_index is None else self._gpu_index

    # -- files --

    def save(self, path: Path) -> None:
        """Write atomically: a temp file in the same folder, then os.replace."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        _faiss().write_index(self._index, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, *, ef_search: int = DEFAULT_EF_SEARCH) -> VectorIndex:
        """Read an index saved by `save`; IndexStoreError if it is missing or corrupt."""
        faiss = _faiss()
        path = Path(path)
        if not path.is_file():
            raise IndexStoreError(f"no vector index at {path}; build the index first")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            reason = _faiss_reason(exc)
            raise IndexStoreError(
                f"vector index {path} is corrupt ({reason}); rebuild it with --rebuild"
            ) from exc
        if not isinstance(index, faiss.IndexIDMap2):
            raise IndexStoreError(
                f"vector index {path} is a {type(index).__name__}, not an IndexIDMap2; "
                "rebuild it with --rebuild"
            )
        return cls(index, ef_search=ef_search)


def _faiss_reason(exc: RuntimeError) -> str:
    """FAISS's error message without its C++ signature and source location, on one line."""
    message = " ".join(str(exc).split())
    match = re.search(r"\.cpp:\d+: (.*)$", message)
    return (match.group(1) if match else message) or "unreadable"


def _num_gpus(faiss) -> int:
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return get_num_gpus() if get_num_gpus else 0

"""What runs on the Ray engine's workers, and the Arrow rows that carry it there and back.

    pass 1, a Ray task per FILES_PER_TASK files: `chunk_rows` reads and chunks them
            (`stages.chunk_file`) -> one row per file: its chunks' texts and token ids
    pass 2, a `GroupEncoder` actor per GPU (else CPU actors): one commit group per call
            (`group_to_arrow`: one row, so Ray never splits it) -> `encoding.encode_chunks`
            -> rows in the chunk table's Arrow layout (int8 quantised there too)

Token ids travel as list<list<int64>>, exactly. Workers load the models from paths
(`WorkerModels`) and check their identities against the driver's (`check_worker_models`).
Nothing here imports Ray: these are plain functions and a plain class that Ray Data calls.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from extok_rag.chunking import Chunk, Chunker
from extok_rag.errors import IncompatibleModelError
from extok_rag.indexes import TableLayout
from extok_rag.indexing.models import IndexModels
from extok_rag.indexing.reading import SourceFile
from extok_rag.indexing.settings import IndexTarget
from extok_rag.indexing.stages import ChunkedFile, chunk_file, group_chunks


@dataclass(frozen=True)
class WorkerModels:
    """How each actor loads the models the driver planned with: paths, not loaded objects.
    `dtype` is fixed by the driver so every actor computes alike ("auto": bf16 on GPUs,
    else the driver's CPU choice). Actors check the identities against the driver's."""

    llm: str | None = None  # an HF causal-LM directory; None: the default LLM
    tokenizer_path: str | None = None  # None: the untrained extensible tokenizer
    embedder_path: str | None = None  # None: the default all-MiniLM-L6-v2
    dtype: str = "auto"

    def resolved(self, device: str) -> WorkerModels:
        """With "auto" dtype replaced by what it picks for `device` here, on the driver."""
        from extok_rag.config import fastest_dtype

        return self if self.dtype != "auto" else replace(self, dtype=fastest_dtype(device))

    def load(self, device: str) -> IndexModels:
        from extok_rag.config import RuntimeConfig
        from extok_rag.models.llm import FrozenLLM

        runtime = RuntimeConfig(device=device, dtype=self.dtype)  # type: ignore[arg-type]
        llm = FrozenLLM.load(self.llm, runtime)
        return IndexModels(llm, self.tokenizer_path, self.embedder_path)


# -- pass 1: read + chunk (Ray tasks) ------------------------------------------------------------


def file_row(index: int, file: SourceFile) -> dict:
    """A corpus file as a pass-1 input row (its path must be readable on every node)."""
    return {"index": index, "path": str(file.path), "rel": file.rel, "size": file.size}


def chunk_rows(batch: pa.Table, chunker: Chunker) -> pa.Table:
    """Ray task: read and chunk each file of `batch` -> one row per file: its chunks' texts
    and token ids, or the skip warning."""
    items = []
    for row in batch.to_pylist():
        file = SourceFile(Path(row["path"]), row["rel"], "", row["size"])
        items.append(chunk_file(file, chunker))
    texts = pa.array([[c.text for c in item.chunks] for item in items], pa.list_(pa.string()))
    token_ids = _nested_ids([[c.token_ids for c in item.chunks] for item in items])
    return pa.table(
        {
            "index": batch.column("index"),
            "skipped": pa.array([item.skipped for item in items], pa.string()),
            "text": texts,
            "token_ids": token_ids,
        }
    )


def chunked_from_arrow(batch: pa.Table, files: Sequence[SourceFile]) -> Iterator[ChunkedFile]:
    """Pass-1 rows -> ChunkedFiles of the driver's own SourceFiles (with their doc hashes)."""
    columns = (
        batch.column("index").to_pylist(),
        batch.column("skipped").to_pylist(),
        batch.column("text").to_pylist(),
        _nested_arrays(batch.column("token_ids")),
    )
    for index, skipped, texts, ids in zip(*columns, strict=True):
        file = files[index]
        if skipped is not None:
            yield ChunkedFile(file, skipped=skipped)
            continue
        chunks = [
            Chunk(file.rel, position, text, token_ids)
            for position, (text, token_ids) in enumerate(zip(texts, ids, strict=True))
        ]
        yield ChunkedFile(file, chunks)


# -- pass 2: encode (Ray actors) -----------------------------------------------------------------


def group_to_arrow(group: Sequence[ChunkedFile], first_row_id: int) -> pa.Table:
    """A commit group as one row (so Ray can never split it) with the row ids of its chunks."""
    chunks, hashes = group_chunks(group)
    return pa.table(
        {
            "first_row_id": pa.array([first_row_id], pa.int64()),
            "doc_path": pa.array([[c.doc_path for c in chunks]], pa.list_(pa.string())),
            "doc_hash": pa.array([[hashes[c.doc_path] for c in chunks]], pa.list_(pa.string())),
            "position": pa.array([[c.position for c in chunks]], pa.list_(pa.int32())),
            "text": pa.array([[c.text for c in chunks]], pa.list_(pa.string())),
            "token_ids": _nested_ids([[c.token_ids for c in chunks]]),
        }
    )


def group_from_arrow(row: pa.Table) -> tuple[list[Chunk], dict[str, str], np.ndarray]:
    """The row of `group_to_arrow` -> (chunks, {doc_path: doc_hash}, row ids (n,) int64)."""
    (paths,) = row.column("doc_path").to_pylist()
    (hashes,) = row.column("doc_hash").to_pylist()
    (positions,) = row.column("position").to_pylist()
    (texts,) = row.column("text").to_pylist()
    (ids,) = _nested_arrays(row.column("token_ids"))
    chunks = [
        Chunk(path, position, text, token_ids)
        for path, position, text, token_ids in zip(paths, positions, texts, ids, strict=True)
    ]
    first = int(row.column("first_row_id")[0].as_py())
    return chunks, dict(zip(paths, hashes, strict=True)), np.arange(first, first + len(chunks))


class GroupEncoder:
    """Ray actor: loads the models once (checking they are the driver's), then encodes one
    commit group per call into rows of the chunk table's layout."""

    def __init__(
        self,
        models: WorkerModels,
        target: IndexTarget,
        layout: TableLayout,
        batch_tokens: int,
        device: str,
        threads: int,
    ) -> None:
        import torch

        from extok_rag.indexing.encoding import ChunkEncoder

        torch.set_num_threads(threads)
        loaded = models.load(device)
        check_worker_models(loaded, target)
        self.encoder = ChunkEncoder(loaded.tokenizer, loaded.embedder, target.stride, batch_tokens)
        self.layout = layout

    def __call__(self, batch: pa.Table) -> pa.Table:
        from extok_rag.indexing.encoding import encode_chunks

        tables = []
        for i in range(batch.num_rows):
            chunks, hashes, row_ids = group_from_arrow(batch.slice(i, 1))
            records = encode_chunks(self.encoder, chunks, hashes)
            tables.append(self.layout.to_arrow(records, row_ids))
        return pa.concat_tables(tables)


def check_worker_models(loaded: IndexModels, target: IndexTarget) -> None:
    """IncompatibleModelError unless a worker loaded the very models the driver plans with
    (another node with other model files would write states no reader can use)."""
    node = socket.gethostname()
    pairs = [
        ("LLM", loaded.llm_identity.fingerprint, target.llm.fingerprint),
        (
            "extensible tokenizer",
            loaded.tokenizer_identity.fingerprint,
            target.tokenizer.fingerprint,
        ),
        ("embedder", loaded.embedder_identity, target.embedder),
    ]
    for what, got, want in pairs:
        if got != want:
            raise IncompatibleModelError(
                f"a Ray worker on {node} loaded another {what} than the driver ({got} vs "
                f"{want}); install the same package and model files on every node"
            )


# -- Arrow helpers: ragged token ids -----------------------------------------------------------


def _ragged(arrays: Sequence[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    dtype = value_type.to_pandas_dtype()
    flat = np.concatenate([np.asarray(a, dtype) for a in arrays]) if arrays else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(dtype), value_type))


def _nested_ids(per_row: Sequence[Sequence[np.ndarray]]) -> pa.ListArray:
    """Rows of chunks' token ids -> list<list<int64>> (ids travel exactly)."""
    inner = _ragged([ids for row in per_row for ids in row], pa.int64())
    offsets = np.zeros(len(per_row) + 1, dtype=np.int32)
    np.cumsum([len(row) for row in per_row], out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def _nested_arrays(column: pa.ChunkedArray | pa.Array) -> list[list[np.ndarray]]:
    """list<list<int64>> -> per row, its chunks' token ids as (n_i,) int64 arrays."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    out = []
    for row in range(len(array)):
        inner = array[row].values  # list<int64> of this row's chunks
        offsets = inner.offsets.to_numpy()
        flat = inner.values.to_numpy(zero_copy_only=False).astype(np.int64)
        out.append(np.split(flat[offsets[0] : offsets[-1]], offsets[1:-1] - offsets[0]))
    return out

"""`extok-rag index --engine ray`: the indexing stages as Ray Data tasks and actors.

The only module that imports Ray (the `ray` extra). It adapts the engine-neutral stages of
`indexing/stages.py` and `indexing/encoding.py`; planning, deletes, the writer lock and the
commit (FAISS file, manifest) stay in `indexing/build.py`, identical for both engines.

    driver: plan (list, hash, compare)                      build.py, as for the local engine
    pass 1, Ray tasks: read + chunk files, FILES_PER_TASK per task       stages.chunk_file
            (a task's worth of files or fewer: read on the driver, without Ray)
    driver: commit groups in plan order; row ids assigned here     stages.commit_groups
    pass 2, Ray actors: encode each group (one actor per GPU, else CPU)  encoding.encode_chunks
            -> rows in the table's Arrow layout (int8 quantised there too)
    driver: one streamed append (one table commit)                    ChunkTable.append_stream
    build.py: row-id index, compaction, FAISS file, manifest (the commit point)

Why two passes and not one streaming pipeline: a group's chunks are encoded together (sorted
by length in padded batches), and a state's last bits depend on its batch's padded length.
Groups are whole documents cut at `commit_tokens` tokens in plan order, so a group's bounds
depend on the token counts of every earlier document: the driver forms them from pass 1's
output. Encoding the very groups the local engine commits gives bitwise the same rows. Output
order is kept (`preserve_order`), and `append_stream` checks that row ids arrive in order.

Ray is started (or connected to) on first need, so a run that only re-reads files that stay
unreadable starts no cluster. Rows are written by the driver into the table LanceDB holds on
its disk: no shared storage for the index, and no `pylance` (LanceDB's own Python API has no
fragment writer; workers sending Arrow rows back costs the network what a worker-side
fragment write would cost the storage).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from extok_rag import errors
from extok_rag.chunking import Chunk, Chunker
from extok_rag.errors import ExtokError, IncompatibleModelError, IndexEngineError
from extok_rag.indexes.table import TableLayout
from extok_rag.indexing.build import IndexModels, IndexTarget, WriteJob
from extok_rag.indexing.reading import SourceFile
from extok_rag.indexing.stages import (
    ChunkedFile,
    GroupSize,
    chunk_file,
    chunk_files,
    commit_groups,
    group_chunks,
)

MISSING_RAY = "the Ray engine needs Ray: pip install 'extok-rag[ray]'"
FILES_PER_TASK = 16  # corpus files read and chunked per Ray task
THREADS_PER_CPU_ACTOR = 4  # CPU actors by default: one per 4 cluster CPUs, 4 torch threads each
_log = logging.getLogger("extok_rag.indexing")


def require_ray():
    """The `ray` module, or IndexEngineError naming the extra to install."""
    try:
        import ray
        import ray.data  # the `data` extra
    except ImportError as exc:
        raise IndexEngineError(MISSING_RAY) from exc
    return ray


# -- the engine --------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class ActorPool:
    """The encoder actors: how many, and what each asks Ray for."""

    size: int
    num_cpus: int
    num_gpus: int
    device: str  # "cuda" or "cpu"
    threads: int  # torch threads per actor


@dataclass(frozen=True)
class RayEngine:
    """`IndexEngine` on Ray Data (see the module docstring). Starts a local Ray instance
    (`workers` CPUs, default all) unless Ray is already initialised in this process or
    `address` names a cluster; disconnects at the end if it connected."""

    models: WorkerModels
    address: str | None = None
    workers: int | None = None  # encoder actors (CPU; capped by the GPUs when on GPUs)
    device: str = "auto"  # auto: one actor per GPU where the cluster has GPUs, else CPU
    files_per_task: int = FILES_PER_TASK

    def write(self, job: WriteJob) -> None:
        ray = require_ray()
        with ExitStack() as run:
            connected = False

            def connect() -> None:  # Ray on first need: a run with nothing to encode starts none
                nonlocal connected
                if not connected:
                    run.enter_context(ray_session(self.address, self.workers))
                    run.enter_context(_quiet_data_context())
                    connected = True

            files = job.plan.to_index
            if len(files) > self.files_per_task:
                connect()
                job.progress.status(f"reading and chunking {len(files):,} files in Ray tasks")
                chunked = self._chunked(ray, job)
            else:  # one task's worth of files (or none): read here, as a task would
                chunked = chunk_files(files, job.chunker)
            groups: list = []  # pa.Table (1 row) per group, or its ObjectRef once connected
            sizes: list[GroupSize] = []
            row_id = job.table.next_row_id()  # ids follow plan order, as the local engine's
            for group in commit_groups(chunked, job.settings.commit_tokens, job.skip):
                table = group_to_arrow(group, row_id)
                groups.append(ray.put(table) if connected else table)
                sizes.append(GroupSize.of(group))
                row_id += sizes[-1].chunks
            if not groups:
                return
            connect()
            refs = [ray.put(g) if isinstance(g, pa.Table) else g for g in groups]
            pool = self.pool(ray.cluster_resources(), len(refs))
            job.progress.status(
                f"encoding on {pool.size} Ray actor{'s' * (pool.size > 1)} ({pool.device})"
            )
            job.before_first_write()
            rows = self._encoded(ray, refs, job, pool)
            job.table.append_stream(_counted(rows, sizes, job))

    def pool(self, resources: dict, groups: int) -> ActorPool:
        """Encoder actors for a cluster with these resources and this many groups."""
        gpus = int(resources.get("GPU", 0))
        if self.device == "cuda" and not gpus:
            raise IndexEngineError("--device cuda: the Ray cluster has no GPUs")
        if gpus and self.device in ("auto", "cuda"):
            size = min(self.workers or gpus, gpus, groups)
            return ActorPool(size, num_cpus=1, num_gpus=1, device="cuda", threads=1)
        cpus = max(1, int(resources.get("CPU", 1)))
        size = min(self.workers or max(1, cpus // THREADS_PER_CPU_ACTOR), cpus, groups)
        threads = max(1, cpus // min(self.workers or size, cpus))
        return ActorPool(size, num_cpus=threads, num_gpus=0, device="cpu", threads=threads)

    def _chunked(self, ray, job: WriteJob) -> Iterator[ChunkedFile]:
        """Pass 1: read + chunk in Ray tasks; ChunkedFiles come back in plan order."""
        files = job.plan.to_index
        if not files:
            return
        rows = [file_row(i, f) for i, f in enumerate(files)]
        blocks = -(-len(rows) // self.files_per_task)
        dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            chunk_rows,
            fn_kwargs={"chunker": job.chunker},
            batch_size=self.files_per_task,
            batch_format="pyarrow",
        )
        expected = 0
        with worker_errors():
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                for item in chunked_from_arrow(batch, files):
                    if item.file is not files[expected]:  # groups and row ids need plan order
                        raise IndexEngineError(
                            f"Ray returned {item.file.rel} out of order (expected "
                            f"{files[expected].rel}); Ray Data's preserve_order was not kept"
                        )
                    expected += 1
                    yield item

    def _encoded(self, ray, refs: list, job: WriteJob, pool: ActorPool) -> Iterator[pa.Table]:
        """Pass 2: one group per actor call; rows come back in group order."""
        dataset = ray.data.from_arrow_refs(refs).map_batches(
            GroupEncoder,
            fn_constructor_kwargs={
                "models": self.models.resolved(pool.device),
                "target": job.target,
                "layout": job.table.layout,
                "batch_tokens": job.settings.batch_tokens,
                "device": pool.device,
                "threads": pool.threads,
            },
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=pool.size),
            num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus,
        )
        with worker_errors():
            yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")


def _counted(rows: Iterable[pa.Table], sizes: Sequence[GroupSize], job: WriteJob):
    """Pass rows through, counting each group as written once all its rows arrived."""
    ends = np.cumsum([s.chunks for s in sizes])
    received = done = 0
    for table in rows:
        received += table.num_rows
        while done < len(sizes) and ends[done] <= received:
            job.written(sizes[done])
            done += 1
        yield table


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


# -- Ray session and errors ----------------------------------------------------------------------


@contextmanager
def ray_session(address: str | None = None, workers: int | None = None) -> Iterator[None]:
    """Ray for this run: the instance already initialised in this process, else a connection
    to `address`, else a local instance with `workers` CPUs (default: all); a connection or
    instance made here is closed at the end."""
    ray = require_ray()
    if ray.is_initialized():
        yield
        return
    if address:
        check_address(address)
    try:
        with warnings.catch_warnings():
            # Ray forks its daemons from this process, which has LanceDB loaded; they exec at
            # once, so LanceDB's fork caution does not apply.
            warnings.filterwarnings("ignore", "lancedb fork support", RuntimeWarning)
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            else:  # our own instance: its start-up notices are not the user's business
                ray.init(
                    num_cpus=workers or os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise IndexEngineError(f"could not start or reach {where}: {_first_line(exc)}") from exc
    try:
        yield
    finally:
        ray.shutdown()


def check_address(address: str) -> None:
    """IndexEngineError at once if `address` (HOST:PORT of a Ray head's GCS) refuses or does
    not answer within 5 s; `ray.init` would retry for minutes. Other forms ("auto",
    "ray://...") are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise IndexEngineError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head` and pass its address, or omit --address for a local instance"
        ) from None


@contextmanager
def _quiet_data_context() -> Iterator[None]:
    """Ray Data as this engine needs it: output in input order (row ids and the table's
    physical order are those of the local engine), no progress bars or plan logs of its own
    (the CLI draws its bars). Restored afterwards."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = (
        ctx.execution_options.preserve_order,
        ctx.enable_progress_bars,
        ctx.print_on_execution_start,
    )
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    data_logger.setLevel(logging.ERROR)  # e.g. "progress bars disabled"
    try:
        yield
    finally:
        (
            ctx.execution_options.preserve_order,
            ctx.enable_progress_bars,
            ctx.print_on_execution_start,
        ) = saved
        data_logger.setLevel(level)


@contextmanager
def worker_errors() -> Iterator[None]:
    """Errors from Ray workers as this package's one-line errors. Ray passes a worker's
    exception back as text inside its own (the original object is gone), so an
    `extok_rag.errors.X: message` line in it becomes that error again; anything else becomes
    an IndexEngineError naming the worker's exception."""
    from ray.exceptions import RayError

    try:
        yield
    except RayError as exc:
        raise worker_error(exc) from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXTOK_LINE = re.compile(r"^extok_rag\.errors\.(\w+): (.+)$", re.MULTILINE)
_ERROR_LINE = re.compile(r"^((?:\w+\.)*\w*(?:Error|Exception)): (.+)$", re.MULTILINE)


def worker_error(exc: BaseException) -> ExtokError:
    """The one-line error for a Ray error `exc` (see `worker_errors`)."""
    text = _ANSI.sub("", "\n".join(str(e) for e in _chain(exc)))
    for match in _EXTOK_LINE.finditer(text):
        kind = getattr(errors, match[1], None)
        if isinstance(kind, type) and issubclass(kind, ExtokError):
            return kind(match[2])
    for match in _ERROR_LINE.finditer(text):
        if not match[1].startswith("ray."):
            return IndexEngineError(f"a Ray worker failed: {match[1]}: {match[2]}")
    return IndexEngineError(f"the Ray engine failed: {_first_line(exc)}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__, getattr(e, "cause", None)])


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__

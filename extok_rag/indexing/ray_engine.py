"""`extok-rag index --engine ray`: the indexing stages as Ray Data tasks and actors.

An `IndexEngine` (`engine.py`) over the engine-neutral stages of `stages.py` and `encoding.py`;
planning, deletes, the writer lock and the commit (FAISS file, manifest) stay in `build.py`
and `commit.py`, identical for both engines. Ray is the optional `ray` extra: it is imported
only when a run starts (`ray_session.py`), never by `import extok_rag.indexing`.

    driver: plan (list, hash, compare)                      build.py, as for the local engine
    pass 1, Ray tasks: read + chunk files, FILES_PER_TASK per task  ray_tasks.chunk_rows
            (a task's worth of files or fewer: read on the driver, without Ray)
    driver: commit groups in plan order; row ids assigned here     stages.commit_groups
    pass 2, Ray actors: encode each group (one actor per GPU, else CPU)  ray_tasks.GroupEncoder
            -> rows in the table's Arrow layout (int8 quantised there too)
    driver: each group's rows appended as they arrive, one table commit per group
            (whole documents, as the local engine's)                ChunkTable.append_stream
    commit.py: row-id index, compaction, FAISS file, manifest (the commit point)

Why two passes and not one streaming pipeline: a group's chunks are encoded together (sorted
by length in padded batches), and a state's last bits depend on its batch's padded length.
Groups are whole documents cut at `commit_tokens` tokens in plan order, so a group's bounds
depend on the token counts of every earlier document: the driver forms them from pass 1's
output. Encoding the very groups the local engine commits gives bitwise the same rows. Output
order is kept (`preserve_order`), and `append_stream` checks that row ids arrive in order.

Why a table commit per group: a killed run keeps every group it appended, and the next run
(either engine) skips those documents (`resume.py`). It cuts the rest into the groups an
uninterrupted run would have, so the finished index equals that run's bitwise (unless the
plan held changed documents: deleted by the killed run, they come back as new ones, in corpus
order). Ray keeps encoding the next groups while the driver appends one.

Ray is started (or connected to) on first need, so a run that only re-reads files that stay
unreadable starts no cluster. Rows are written by the driver into the table LanceDB holds on
its disk: no shared storage for the index, and no `pylance` (LanceDB's own Python API has no
fragment writer; workers sending Arrow rows back costs the network what a worker-side
fragment write would cost the storage).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from extok_rag.errors import IndexEngineError
from extok_rag.indexing.engine import WriteJob
from extok_rag.indexing.ray_session import (
    quiet_data_context,
    ray_session,
    require_ray,
    worker_errors,
)
from extok_rag.indexing.ray_tasks import (
    GroupEncoder,
    WorkerModels,
    chunk_rows,
    chunked_from_arrow,
    file_row,
    group_to_arrow,
)
from extok_rag.indexing.stages import ChunkedFile, GroupSize, chunk_files, commit_groups

FILES_PER_TASK = 16  # corpus files read and chunked per Ray task
THREADS_PER_CPU_ACTOR = 4  # CPU actors by default: one per 4 cluster CPUs, 4 torch threads each


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

    @classmethod
    def for_models(
        cls,
        llm: str | None,
        tokenizer_path: Path | None,
        embedder: Path | None,
        *,
        address: str | None = None,
        workers: int | None = None,
        device: str = "auto",
    ) -> RayEngine:
        """The engine for these models; paths made absolute, as every worker loads them."""

        def absolute(path) -> str | None:
            return None if path is None else str(Path(path).expanduser().resolve())

        llm_spec = llm if llm in (None, "default") else absolute(llm)
        models = WorkerModels(llm_spec, absolute(tokenizer_path), absolute(embedder))
        return cls(models, address=address, workers=workers, device=device)

    def write(self, job: WriteJob) -> None:
        ray = require_ray()
        with ExitStack() as run:
            connected = False

            def connect() -> None:  # Ray on first need: a run with nothing to encode starts none
                nonlocal connected
                if not connected:
                    run.enter_context(ray_session(self.address, self.workers))
                    run.enter_context(quiet_data_context())
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
            for group_rows, size in per_group(rows, sizes):
                job.table.append_stream([group_rows])  # one table commit per group
                job.written(size)

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


def per_group(
    rows: Iterable[pa.Table], sizes: Sequence[GroupSize]
) -> Iterator[tuple[pa.Table, GroupSize]]:
    """The encoded rows as they stream back, cut into their commit groups: (a group's rows,
    its size) in group order. Ray Data may merge or split the actors' output blocks, so the
    cuts come from the groups' chunk counts, not from the blocks."""
    todo = iter(sizes)
    size = next(todo, None)
    held: list[pa.Table] = []
    count = 0  # rows held, not yet yielded
    for table in rows:
        held.append(table)
        count += table.num_rows
        while size is not None and count >= size.chunks:
            received = pa.concat_tables(held)
            yield received.slice(0, size.chunks), size
            rest = received.slice(size.chunks)
            held, count = [rest], rest.num_rows
            size = next(todo, None)
    if size is not None or count:
        expected = sum(s.chunks for s in sizes)
        raise IndexEngineError(
            f"the Ray actors returned other rows than the {expected:,} chunks sent to them"
        )

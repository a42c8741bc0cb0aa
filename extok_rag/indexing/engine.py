"""The write phase of a run, behind one protocol: an engine reads, chunks, encodes and appends
the plan's documents; `LocalEngine` does it in this process, `ray_engine.RayEngine` on Ray Data.

Planning, deletes and the commit happen in `build.py`, the same for every engine, and every
engine writes the same rows (ids, states, vectors): both encode the same commit groups
(`stages.commit_groups`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from extok_rag.chunking import Chunker
from extok_rag.indexes import ChunkTable
from extok_rag.indexing.models import IndexModels
from extok_rag.indexing.plan import IndexPlan
from extok_rag.indexing.report import IndexProgress, IndexReport, report_skip
from extok_rag.indexing.settings import IndexSettings, IndexTarget
from extok_rag.indexing.stages import (
    ChunkedFile,
    GroupSize,
    chunk_files,
    commit_groups,
    group_chunks,
)


@dataclass
class WriteJob:
    """What an engine's write phase gets: the writable table (deletes done), the documents to
    index, and how. The engine reads, chunks, encodes and appends them to `table` in
    uncommitted versions, updating `report` and `progress`; `build_index` commits after."""

    table: ChunkTable
    models: IndexModels
    target: IndexTarget  # what the rows are written with (identities, stride, chunking)
    chunker: Chunker
    plan: IndexPlan
    settings: IndexSettings
    report: IndexReport
    progress: IndexProgress
    before_first_write: Callable[[], None]  # records pending.json; call before any append

    def skip(self, item: ChunkedFile) -> None:
        """A file that yields no chunks: one warning line, counted as done."""
        report_skip(item, self.report, self.progress)

    def written(self, size: GroupSize) -> None:
        """Count a group of documents as appended."""
        self.report.chunks_written += size.chunks
        self.report.tokens_written += size.tokens
        self.progress.advance(size.files, size.bytes, size.chunks, size.tokens)


class IndexEngine(Protocol):
    """Runs a run's write phase (`WriteJob`): `LocalEngine` here, a Ray Data one in
    `ray_engine.py`. Every engine writes the same rows (ids, states, vectors)."""

    def write(self, job: WriteJob) -> None: ...


class LocalEngine:
    """The stages in this process: each commit group is encoded, then appended in its own
    table commit (whole documents per commit, so a killed run keeps what it finished)."""

    def write(self, job: WriteJob) -> None:
        from extok_rag.indexing.encoding import ChunkEncoder, encode_chunks

        encoder = None
        chunked = chunk_files(job.plan.to_index, job.chunker)
        for group in commit_groups(chunked, job.settings.commit_tokens, job.skip):
            if encoder is None:
                job.progress.status("loading the extensible tokenizer and the embedder")
                encoder = ChunkEncoder(
                    job.models.tokenizer,
                    job.models.embedder,
                    job.target.stride,
                    job.settings.batch_tokens,
                )
            records = encode_chunks(encoder, *group_chunks(group))
            if job.report.chunks_written == 0:
                job.before_first_write()
            job.table.add(records)
            job.written(GroupSize.of(group))

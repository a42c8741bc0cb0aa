"""Corpus -> index: `build_index`, an incremental, crash-safe run with a consistent snapshot
for readers.

A run lists the corpus, resolves what it writes with (`settings.py`) and checks that against
the index, opens the table where the last run left it (`resume.py`) and plans (`plan.py`).
A dry run then only counts; a real run deletes changed and removed documents, has its engine
write the rest (`engine.py`) and commits (`commit.py`, which describes the protocol).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from extok_rag.chunking import Chunker
from extok_rag.errors import IndexStoreError
from extok_rag.indexes import ChunkTable, IndexCounts, Manifest, WriterLock, disk_bytes
from extok_rag.indexing.commit import commit_index
from extok_rag.indexing.engine import IndexEngine, LocalEngine, WriteJob
from extok_rag.indexing.models import IndexModels
from extok_rag.indexing.plan import plan_changes
from extok_rag.indexing.reading import list_corpus
from extok_rag.indexing.report import IndexProgress, IndexReport, report_skip
from extok_rag.indexing.resume import (
    existing_manifest,
    open_table,
    vectors_loadable,
    write_pending,
)
from extok_rag.indexing.settings import (
    IndexSettings,
    IndexTarget,
    check_settings,
    resolve_chunking,
    resolve_target,
)
from extok_rag.indexing.stages import chunk_files


def build_index(
    corpus: Path,
    index_dir: Path,
    models: IndexModels,
    settings: IndexSettings | None = None,
    *,
    rebuild: bool = False,
    dry_run: bool = False,
    progress: IndexProgress | None = None,
    engine: IndexEngine | None = None,
) -> IndexReport:
    """Bring the index at `index_dir` up to date with the corpus folder `corpus`.

    `engine` runs the read -> chunk -> encode -> write stages of the documents to index
    (default `LocalEngine`: in this process); planning, deletes and the commit happen here,
    the same for every engine. Raises IncompatibleModelError if the index was built with
    other models or settings (unless `rebuild`), IndexBusyError if another process is writing
    it (one writer at a time, see `indexes/lock.py`; a dry run takes no lock), IndexStoreError
    if it is unreadable. Bad corpus files are skipped with a warning.
    """
    settings = settings or IndexSettings()
    progress = progress or IndexProgress()
    engine = engine or LocalEngine()
    index_dir = Path(index_dir)
    if dry_run:
        return _run(corpus, index_dir, models, settings, rebuild, dry_run, progress, engine)
    with storage_errors(index_dir):
        index_dir.mkdir(parents=True, exist_ok=True)
        with WriterLock(index_dir):  # IndexBusyError at once if another run writes this index
            return _run(corpus, index_dir, models, settings, rebuild, dry_run, progress, engine)


# Errors of the storage itself (disk full, file too large, read-only, I/O): LanceDB and FAISS
# raise them as RuntimeErrors that carry the OS's message.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES)


@contextmanager
def storage_errors(index_dir: Path) -> Iterator[None]:
    """Turn a failed write into one IndexStoreError line. Nothing is lost by it: writes go to
    uncommitted table versions and temp files, so the manifest's index stays as it was, and
    the next run resumes."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        reason = _storage_reason(exc)
        if reason is None:
            raise
        raise IndexStoreError(
            f"could not write index {index_dir}: {reason}; the last committed index is "
            "intact; free space (or fix the cause) and run again to finish"
        ) from exc


def _storage_reason(exc: BaseException) -> str | None:
    """The OS's message for a storage failure in `exc`, else None."""
    if isinstance(exc, OSError):
        return os.strerror(exc.errno) if exc.errno in _STORAGE_ERRNOS else None
    message = str(exc)
    for code in _STORAGE_ERRNOS:
        if f"(os error {code})" in message or os.strerror(code) in message:
            return os.strerror(code)
    return None


# -- the run -----------------------------------------------------------------------------------


@dataclass
class _RunState:
    """One run, planned: what it continues from, what it writes with, and its report."""

    index_dir: Path
    models: IndexModels
    settings: IndexSettings
    progress: IndexProgress
    rebuild: bool
    manifest: Manifest | None  # the last commit's; None for a new index (or a rebuild of one)
    target: IndexTarget
    table: ChunkTable | None  # None on a dry run with no usable table
    chunker: Chunker
    report: IndexReport
    started: float  # time.perf_counter() at the start

    def record_pending(self) -> None:
        """Write pending.json: uncommitted table versions are this run's target's."""
        write_pending(self.index_dir, self.target, rebuild=self.rebuild)


def _run(
    corpus: Path,
    index_dir: Path,
    models: IndexModels,
    settings: IndexSettings,
    rebuild: bool,
    dry_run: bool,
    progress: IndexProgress,
    engine: IndexEngine,
) -> IndexReport:
    run = _plan_run(corpus, index_dir, models, settings, rebuild, dry_run, progress)
    if dry_run:
        _count_dry_run(run)
    else:
        _write_and_commit(run, engine)
    run.report.seconds = time.perf_counter() - run.started
    return run.report


def _plan_run(
    corpus: Path,
    index_dir: Path,
    models: IndexModels,
    settings: IndexSettings,
    rebuild: bool,
    dry_run: bool,
    progress: IndexProgress,
) -> _RunState:
    """List the corpus, resolve and check the target, open the table, plan."""
    started = time.perf_counter()
    files, skipped = list_corpus(Path(corpus), settings.include, settings.exclude)
    for message in skipped:
        progress.warn(message)
    manifest = existing_manifest(index_dir, rebuild)
    target = resolve_target(models, settings, manifest)
    if manifest is not None and not rebuild:
        check_settings(manifest, target)
    table = open_table(index_dir, manifest, target, models, rebuild=rebuild, dry_run=dry_run)
    plan = plan_changes(files, table.doc_hashes() if table is not None else {})
    report = IndexReport(index_dir, plan, manifest.counts if manifest else IndexCounts())
    report.skipped = skipped
    progress.start(plan)
    chunker = Chunker(models.llm.tokenizer, resolve_chunking(settings, manifest))
    return _RunState(
        index_dir=index_dir,
        models=models,
        settings=settings,
        progress=progress,
        rebuild=rebuild,
        manifest=manifest,
        target=target,
        table=table,
        chunker=chunker,
        report=report,
        started=started,
    )


def _count_dry_run(run: _RunState) -> None:
    """Read and chunk what a run would index, and count it; write nothing."""
    report, progress = run.report, run.progress
    for item in chunk_files(report.plan.to_index, run.chunker):
        if item.skipped is not None:
            report_skip(item, report, progress)
            continue
        report.chunks_written += len(item.chunks)
        report.tokens_written += item.tokens
        progress.advance(1, item.file.size, len(item.chunks), item.tokens)
    report.dry_run = True
    report.bytes_on_disk = disk_bytes(run.index_dir) if run.index_dir.is_dir() else 0


def _write_and_commit(run: _RunState, engine: IndexEngine) -> None:
    """Deletes, the engine's writes, then the commit, unless the index is up to date."""
    table, manifest, report, plan = run.table, run.manifest, run.report, run.report.plan
    assert table is not None
    committed = manifest is not None and manifest.table_version == table.version
    vectors_ok = manifest is not None and vectors_loadable(run.index_dir, manifest, run.progress)
    stale = plan.deleted + [f.rel for f in plan.changed]
    if stale or not committed:
        run.record_pending()
    if stale:
        table.delete_docs(stale)
    # New files that turn out unreadable or empty write nothing: then no pending, no commit.
    job = WriteJob(
        table,
        run.models,
        run.target,
        run.chunker,
        plan,
        run.settings,
        report,
        run.progress,
        before_first_write=run.record_pending,
    )
    engine.write(job)
    text_index_missing = table.count() > 0 and not table.has_text_index()  # an older index
    unchanged = table.version == (manifest.table_version if manifest else None)
    if unchanged and vectors_ok and not text_index_missing:
        report.up_to_date = not plan.has_changes or not (stale or report.chunks_written)
        report.table_version = table.version
        report.bytes_on_disk = disk_bytes(run.index_dir)
    else:
        commit_index(run.index_dir, table, run.target, run.settings, manifest, report, run.progress)

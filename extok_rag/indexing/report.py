"""What a run tells its caller: progress callbacks as it goes, a report at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from extok_rag.indexes import IndexCounts
from extok_rag.indexing.plan import IndexPlan
from extok_rag.indexing.stages import ChunkedFile


@dataclass
class IndexReport:
    """The outcome of a run; `counts` are the whole index's after it."""

    index_dir: Path
    plan: IndexPlan
    counts: IndexCounts
    chunks_written: int = 0
    tokens_written: int = 0
    skipped: list[str] = field(default_factory=list)
    bytes_on_disk: int = 0
    seconds: float = 0.0
    up_to_date: bool = False
    dry_run: bool = False
    table_version: int | None = None


class IndexProgress:
    """Callbacks a run reports through (the CLI draws rich bars); this base does nothing."""

    def warn(self, message: str) -> None: ...
    def status(self, message: str) -> None: ...
    def start(self, plan: IndexPlan) -> None: ...
    def advance(self, files: int, bytes_read: int, chunks: int, tokens: int) -> None: ...


def report_skip(item: ChunkedFile, report: IndexReport, progress: IndexProgress) -> None:
    """A file that yields no chunks: one warning line, counted as done."""
    assert item.skipped is not None
    report.skipped.append(item.skipped)
    progress.warn(item.skipped)
    progress.advance(1, item.file.size, 0, 0)

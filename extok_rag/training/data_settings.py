"""What a `prepare` run is asked for (`DataSettings`), where it reports progress, and the
seeded ranks that order everything it reads: equal settings and package versions give equal
shards."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Protocol

from extok_rag.training import cleaning
from extok_rag.training.sources import TrainingSource, source_by_name

PIPELINE_VERSION = 2  # bump when cleaning or packing changes what a run produces


@dataclass(frozen=True)
class DataSettings:
    """What a `prepare` run produces; equal settings (and package versions) give equal shards.

    `max_chars`: total clean characters wanted; `None` takes each source's own `max_chars`,
    otherwise those caps are scaled down in proportion when their sum is larger.
    """

    sources: tuple[str, ...] = ()  # source names; empty = all of `DEFAULT_SOURCES`
    max_chars: int | None = None
    seq_len: int = 1024  # 4 chunks x 256 tokens
    val_fraction: float = 0.02
    seed: int = 0
    min_paragraph_chars: int = cleaning.MIN_PARAGRAPH_CHARS

    def resolved_sources(self) -> tuple[TrainingSource, ...]:
        return source_by_name(list(self.sources))

    def budgets(self) -> dict[str, int]:
        sources = self.resolved_sources()
        caps = {s.name: s.max_chars for s in sources}
        total = sum(caps.values())
        if self.max_chars is not None and total > self.max_chars:
            caps = {name: cap * self.max_chars // total for name, cap in caps.items()}
        return caps

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sources"] = [s.name for s in self.resolved_sources()]
        data["pipeline_version"] = PIPELINE_VERSION
        return data


class ProgressSink(Protocol):
    """Where `prepare_training_data` reports progress (the CLI passes a rich progress bar)."""

    def begin(self, label: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class SilentProgress:
    """A `ProgressSink` that reports nothing."""

    def begin(self, label: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def seeded_rank(seed: int, key: str) -> int:
    """A 64-bit pseudo-random rank of `key` under `seed`: sorting by it gives a seeded order,
    comparing it with a fraction of 2**64 a seeded split."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest())

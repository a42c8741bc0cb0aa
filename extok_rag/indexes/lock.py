"""One writer per index: an exclusive `flock` on `<index_dir>/writer.lock`.

The lock file holds the holder's pid, host and start time (JSON), so a second writer can say
who is busy. The lock itself is the kernel's `flock`, not the file's existence: the kernel drops
it when the holder exits, however it exits (`kill -9` included), so a lock left behind by a
crash is stale by construction and the next writer simply takes it and rewrites the file.
Readers never take the lock: they read the manifest's committed snapshot.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from extok_rag.errors import IndexBusyError

LOCK_NAME = "writer.lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a writer lock."""

    pid: int
    host: str
    started: str  # UTC, ISO 8601

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.started}"


def lock_path(index_dir: Path) -> Path:
    return Path(index_dir) / LOCK_NAME


def read_holder(index_dir: Path) -> LockHolder | None:
    """The holder recorded in the lock file; None if there is none or it is unreadable
    (a writer between taking the lock and writing its name)."""
    try:
        data = json.loads(lock_path(index_dir).read_text())
        return LockHolder(int(data["pid"]), str(data["host"]), str(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_not_busy(index_dir: Path) -> None:
    """IndexBusyError now if another process writes `index_dir` (a probe, so a command can
    fail before loading models; the real lock is taken by the writer itself)."""
    if Path(index_dir).is_dir():
        with WriterLock(index_dir):
            pass


class WriterLock:
    """`with WriterLock(index_dir):` — raises IndexBusyError at once if another process holds
    it. Not re-entrant; the index folder must exist."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = Path(index_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        # No O_TRUNC: a contender must not wipe the holder's name before failing to lock.
        fd = os.open(lock_path(self.index_dir), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexBusyError(self._busy_message()) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        holder = LockHolder(
            os.getpid(), socket.gethostname(), datetime.now(UTC).isoformat(timespec="seconds")
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(vars(holder)).encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # the file stays: unlinking it would race a waiting writer
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _busy_message(self) -> str:
        holder = read_holder(self.index_dir)
        who = f" ({holder.describe()})" if holder else ""
        return (
            f"index {self.index_dir} is being written by another process{who}; "
            "wait for it to finish (one writer at a time)"
        )

"""The served index, reopened when `extok-rag index` commits a new version.

Each use stats the manifest (one `stat`: a commit replaces the file atomically, so a new commit
is a new inode or mtime); only when that changed is the manifest read, and only when its
committed table version or update time changed is the index reopened through `open_index`. A
new version that cannot be opened, or that was built for another LLM, is not served: the old
snapshot stays, the reason is kept for /health, and the reload is tried again after the
manifest changes or `retry_s` seconds pass.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extok_rag.indexes import IndexSnapshot, open_index
from extok_rag.indexes.manifest import manifest_path, read_manifest

_log = logging.getLogger("extok_rag.serve")

Stamp = tuple[int, int, int]  # the manifest file's (inode, mtime_ns, size)


@dataclass(frozen=True)
class ReloadStatus:
    table_version: int | None
    updated: str
    reloads: int
    error: str | None  # why the newest committed version is not served (None: it is)


def manifest_stamp(index_dir: Path) -> Stamp | None:
    try:
        st = os.stat(manifest_path(index_dir))
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class LiveIndex:
    """The snapshot to serve now; `accept` vets a reopened snapshot (raise to refuse it)."""

    def __init__(
        self,
        index_dir: Path,
        snapshot: IndexSnapshot,
        accept: Callable[[IndexSnapshot], None],
        retry_s: float = 5.0,
    ):
        self.index_dir = Path(index_dir)
        self.accept = accept
        self.retry_s = retry_s
        self._snapshot = snapshot
        self._stamp = manifest_stamp(self.index_dir)
        self._failed_at: float | None = None
        self._error: str | None = None
        self._reloads = 0
        self._lock = threading.Lock()

    def current(self) -> IndexSnapshot:
        """The newest committed snapshot that opens and is accepted, else the one served."""
        with self._lock:
            stamp = manifest_stamp(self.index_dir)
            retry = (
                self._failed_at is not None and time.monotonic() - self._failed_at > self.retry_s
            )
            if stamp != self._stamp or retry:
                self._stamp = stamp
                self._reload()
            return self._snapshot

    def status(self) -> ReloadStatus:
        m = self._snapshot.manifest
        return ReloadStatus(m.table_version, m.updated, self._reloads, self._error)

    def _reload(self) -> None:
        served = self._snapshot.manifest
        try:
            latest = read_manifest(self.index_dir)
            if (latest.table_version, latest.updated) == (served.table_version, served.updated):
                self._failed_at, self._error = None, None
                return
            snapshot = open_index(self.index_dir, notice=_log.warning)
            self.accept(snapshot)
        except Exception as exc:  # any failure: keep serving the old snapshot
            self._failed_at, self._error = time.monotonic(), str(exc)
            _log.warning(
                "index %s not reloaded, still serving table version %s: %s",
                self.index_dir,
                served.table_version,
                exc,
            )
            return
        self._snapshot, self._failed_at, self._error = snapshot, None, None
        self._reloads += 1
        _log.info(
            "index %s reloaded: table version %s -> %s",
            self.index_dir,
            served.table_version,
            snapshot.manifest.table_version,
        )

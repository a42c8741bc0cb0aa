"""The writer lock across real processes: a live holder refuses a second writer by name; a
holder killed with SIGKILL leaves a stale lock file that the next writer takes over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from extok_rag.errors import IndexBusyError, IndexStoreError
from extok_rag.indexes.lock import WriterLock, lock_path, read_holder

HOLDER = (
    "import sys, time\n"
    "from extok_rag.indexes.lock import WriterLock\n"
    "lock = WriterLock(sys.argv[1])\n"
    "lock.acquire()\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def holder(tmp_path):
    """A separate process that takes the lock on tmp_path and sleeps holding it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_live_holder_refuses_a_second_writer_naming_its_pid(tmp_path, holder):
    with pytest.raises(IndexBusyError) as info:
        WriterLock(tmp_path).acquire()
    message = str(info.value)
    assert f"pid {holder.pid}" in message and "one writer at a time" in message
    assert "\n" not in message
    assert isinstance(info.value, IndexStoreError)  # the CLI renders it as one line
    assert read_holder(tmp_path).pid == holder.pid  # the failed attempt wiped nothing


def test_lock_of_a_killed_holder_is_stale_and_taken_over(tmp_path, holder):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert read_holder(tmp_path).pid == holder.pid  # the file still names the dead holder
    with WriterLock(tmp_path):
        assert read_holder(tmp_path).pid == os.getpid()
    assert lock_path(tmp_path).exists()  # kept on release (no unlink race), but emptied
    assert read_holder(tmp_path) is None


def test_release_lets_the_next_writer_in_and_locks_are_per_index(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with WriterLock(tmp_path / "a"):
        with pytest.raises(IndexBusyError):  # a second open file in the same process too
            WriterLock(tmp_path / "a").acquire()
        with WriterLock(tmp_path / "b"):
            pass
    with WriterLock(tmp_path / "a"):
        holder = json.loads(lock_path(tmp_path / "a").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]

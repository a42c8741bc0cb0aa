"""One worker thread with a bounded queue: every model call of the server runs here.

CPU torch is neither safe nor faster when several requests decode at once (they share the
same intra-op threads, and a fast tokenizer raises "Already borrowed" when two threads use it),
so requests wait in a queue of at most `max_queue` jobs and run one after another. A full
queue is refused at once (`QueueFullError`, HTTP 503) rather than left to time out.

A job is a generator of `(kind, value)` events, run by the worker; its events reach the
request's event loop through an asyncio queue. Cancelling a job (the client went away) stops
it between two events: a queued job never starts, a running one is closed (its `finally`
blocks run, so a decoding loop stops at the next token).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from extok_rag.errors import ExtokError

Event = tuple[str, Any]
END = "end"  # the last event of every job
ERROR = "error"  # value: the exception the job raised

_log = logging.getLogger("extok_rag.serve")


class QueueFullError(ExtokError):
    """The request queue holds `max_queue` jobs already: try again later (HTTP 503)."""


class ShuttingDownError(ExtokError):
    """The request's work was dropped because the server is shutting down (HTTP 503)."""


@dataclass
class Job:
    """One request's work, and the channel its events come back through."""

    work: Callable[[], Iterator[Event]]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, kind: str, value: Any = None) -> None:
        """Hand one event to the request's event loop (called from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: the server is shutting down
            self.cancelled.set()

    def cancel(self) -> None:
        self.cancelled.set()

    async def next_event(self) -> Event:
        return await self.events.get()


@dataclass(frozen=True)
class QueueStats:
    """The queue now (waiting jobs, whether one runs) and jobs finished since start: served
    (ran to the end or failed) and cancelled (client gone before or while running)."""

    waiting: int
    running: bool
    max_queue: int
    served: int
    cancelled: int


class Worker:
    """Runs jobs one at a time in a daemon thread, at most `max_queue` waiting."""

    def __init__(self, max_queue: int):
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.max_queue = max_queue
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._running: Job | None = None
        self._served = 0
        self._cancelled = 0
        self._thread = threading.Thread(target=self._loop, name="extok-serve-worker", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[], Iterator[Event]]) -> Job:
        """Queue `work` (a generator function) for the calling event loop; QueueFullError when
        `max_queue` jobs wait already."""
        job = Job(work, asyncio.get_running_loop())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError(
                f"the server is busy ({self.max_queue} requests queued); try again later"
            ) from None
        return job

    def stats(self) -> QueueStats:
        return QueueStats(
            self._queue.qsize(),
            self._running is not None,
            self.max_queue,
            self._served,
            self._cancelled,
        )

    def close(self, timeout: float = 5.0) -> None:
        """Cancel the running job, drop the waiting ones, and stop the thread."""
        if self._running is not None:
            self._running.cancel()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel()
                job.emit(END)
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:  # refilled meanwhile: the daemon thread dies with the process
            return
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.cancelled.is_set():
                self._cancelled += 1
                job.emit(END)
                continue
            self._running = job
            try:
                self._run(job)
            finally:
                self._running = None
                job.emit(END)

    def _run(self, job: Job) -> None:
        """Iterate the job's events, stopping (and closing it) as soon as it is cancelled."""
        events = job.work()
        completed = False
        try:
            for event in events:
                if job.cancelled.is_set():
                    break
                job.emit(*event)
            else:
                completed = True
        except Exception as exc:  # reported to the request; the worker carries on
            job.emit(ERROR, exc)
            completed = True
        finally:
            events.close()
            if completed:
                self._served += 1
            else:
                self._cancelled += 1

"""One model thread that decodes every answer in one continuous batch, behind a bounded queue.

CPU torch is neither safe nor faster when several threads run the model at once (they share the
same intra-op threads, and a fast tokenizer raises "Already borrowed" when two threads use it),
so one thread does all model work (`models.torch_thread`: the one that loaded the models, or
decoding steps run ~60% slower). It still serves requests together: each loop it takes new
requests up to `max_batch` live rows, prepares them (retrieval and prompt: `Job.prepare`, their
PREPARED event), admits them into the batch (`models.batch_decode.DecodeBatch`), steps the batch
once, and hands every row's new text to its own request. A row leaves at its own end, so a short
answer never waits for a long one. Requests beyond the batch wait, at most `max_queue` of them;
more are refused at once (`QueueFullError`, HTTP 503) rather than left to time out.

A job's events reach its request's event loop through an asyncio queue. Cancelling a job (the
client went away) takes effect at the next step: a waiting job never starts, a live row leaves
the batch. An error in one request's preparation answers that request only; an error in a step
the rows share answers the rows of that batch, and the thread carries on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from extok_rag.config import GenerationConfig
from extok_rag.errors import ExtokError
from extok_rag.models.batch_decode import DecodeBatch, Emitted
from extok_rag.models.generation import TextPieces
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import Row
from extok_rag.models.torch_thread import TorchThread

Event = tuple[str, Any]
PREPARED = "prepared"  # value: what the request reports besides the answer (its metadata)
TOKEN = "token"  # value: a piece of the answer's text (whole characters)
DONE = "done"  # value: the tokens generated
END = "end"  # the last event of every job
ERROR = "error"  # value: the exception the job raised

_log = logging.getLogger("extok_rag.serve")


class QueueFullError(ExtokError):
    """The batch is full and `max_queue` requests wait already: try again later (HTTP 503)."""


class ShuttingDownError(ExtokError):
    """The request's work was dropped because the server is shutting down (HTTP 503)."""


@dataclass(frozen=True)
class Prepared:
    """A request ready to decode: its PREPARED event's value, its prompt and its settings."""

    event: Any
    row: Row
    gen: GenerationConfig


@dataclass(eq=False)  # hashed by identity: a job is its batch row's key
class Job:
    """One request's work (`prepare`, run on the worker thread), and the channel its events
    come back through."""

    prepare: Callable[[], Prepared]
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
    """Now: requests waiting for a place in the batch, rows decoding (running); since start:
    requests served (answered or failed) and cancelled (client gone before or while running)."""

    waiting: int
    running: int
    max_queue: int
    max_batch: int
    served: int
    cancelled: int


def _report_crash(loop: Future) -> None:
    """Log a decoding loop that ended by an exception (a plain thread's excepthook did so
    before the loop ran on a `TorchThread`, whose future would keep it silent)."""
    if not loop.cancelled() and loop.exception() is not None:
        _log.error("the decoding loop stopped", exc_info=loop.exception())


class Worker:
    """The model thread (a daemon): at most `max_batch` rows decode together, at most
    `max_queue` requests wait beyond them. `thread`: the thread that loaded the models (a new
    one when None), which then runs the loop."""

    def __init__(
        self,
        llm: FrozenLLM,
        max_queue: int,
        max_batch: int = 16,
        thread: TorchThread | None = None,
    ):
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be at least 1")
        self.llm, self.max_queue, self.max_batch = llm, max_queue, max_batch
        self._thread = thread or TorchThread("extok-serve-worker")
        self._batch = self._thread.call(DecodeBatch, llm)  # packs weights: torch work
        self._live: dict[Job, TextPieces] = {}  # the batch's rows, and their text so far
        self._waiting: deque[Job] = deque()
        self._taken = 0  # jobs out of the queue, not yet finished (preparing or live)
        self._served = self._cancelled = 0
        self._closed = False
        self._wake = threading.Condition()
        self._thread.submit(self._loop).add_done_callback(_report_crash)

    def submit(self, prepare: Callable[[], Prepared]) -> Job:
        """Queue a request for the calling event loop; QueueFullError when the batch is full
        and `max_queue` requests wait already."""
        job = Job(prepare, asyncio.get_running_loop())
        with self._wake:
            if self._closed:
                raise ShuttingDownError("the server is shutting down")
            if len(self._waiting) + self._taken >= self.max_batch + self.max_queue:
                raise QueueFullError(
                    f"the server is busy ({self.max_batch} answers decoding, {self.max_queue} "
                    "requests queued); try again later"
                )
            self._waiting.append(job)
            self._wake.notify()
        return job

    def stats(self) -> QueueStats:
        """`running` counts the batch's rows and the requests being prepared to join it."""
        with self._wake:
            return QueueStats(
                len(self._waiting),
                self._taken,
                self.max_queue,
                self.max_batch,
                self._served,
                self._cancelled,
            )

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread: live rows and waiting requests end (END, then ShuttingDownError
        on the request's side)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)  # the loop ends, then the thread

    # -- the thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        while (arrivals := self._take()) is not None:
            try:
                self._admit(arrivals)
                self._drop_cancelled()
                self._emit(self._batch.step())
            except Exception as exc:  # a shared step failed: its rows get the error
                _log.error("decoding step failed", exc_info=exc)
                self._fail_batch(exc)
        self._shut()

    def _take(self) -> list[Job] | None:
        """Waiting jobs for the free places in the batch (blocks while there is nothing to
        do); None once closed. Cancelled waiting jobs leave the queue here."""
        with self._wake:
            while not (self._closed or self._waiting or self._live):
                self._wake.wait()
            if self._closed:
                return None
            for job in [j for j in self._waiting if j.cancelled.is_set()]:
                self._waiting.remove(job)
                self._taken += 1
                self._finish(job, served=False)
            free = self.max_batch - len(self._live)
            taken = [self._waiting.popleft() for _ in range(min(free, len(self._waiting)))]
            self._taken += len(taken)
        return taken

    def _admit(self, jobs: list[Job]) -> None:
        """Prepare each job (its errors answer it alone), then prefill the prepared ones into
        the batch together (an error there answers them, the batch is unchanged)."""
        entries = []
        for job in jobs:
            try:
                prepared = job.prepare()
                self._batch.check(prepared.row, prepared.gen)
            except Exception as exc:
                job.emit(ERROR, exc)
                self._finish(job, served=True)
                continue
            job.emit(PREPARED, prepared.event)
            entries.append((job, prepared.row, prepared.gen))
        try:
            emitted = self._batch.admit(entries)
        except Exception as exc:
            for job, _, _ in entries:
                job.emit(ERROR, exc)
                self._finish(job, served=True)
            return
        self._live.update((job, TextPieces(self.llm.tokenizer)) for job, _, _ in entries)
        self._emit(emitted)

    def _drop_cancelled(self) -> None:
        gone = [job for job in self._live if job.cancelled.is_set()]
        self._batch.remove(gone)
        for job in gone:
            self._finish(job, served=False)

    def _emit(self, emitted: list[Emitted]) -> None:
        """Each row's new text to its request (whole characters), DONE when it ended."""
        for out in emitted:
            job = out.key
            if out.token is not None:
                piece = self._live[job].push(out.token)
                if piece is not None:
                    job.emit(TOKEN, piece)
            if out.done:
                job.emit(DONE, out.count)
                self._finish(job, served=True)

    def _fail_batch(self, exc: Exception) -> None:
        for job in list(self._live):
            job.emit(ERROR, exc)
            self._finish(job, served=True)
        self._batch.clear()

    def _shut(self) -> None:
        """Closed: every live row and waiting request ends, cancelled."""
        with self._wake:
            jobs = [*self._live, *self._waiting]
            self._taken += len(self._waiting)
            self._waiting.clear()
        for job in jobs:
            job.cancel()
            self._finish(job, served=False)

    def _finish(self, job: Job, served: bool) -> None:
        """A job taken from the queue ends: counted, its place freed, then its END sent."""
        self._live.pop(job, None)
        with self._wake:
            self._taken -= 1
            if served:
                self._served += 1
            else:
                self._cancelled += 1
        job.emit(END)

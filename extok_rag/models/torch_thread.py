"""One thread for a long-lived process's torch work (`serve`): it loads the models and runs the
decoding loop.

Why one. PyTorch's CPU ops run in parallel on OpenMP (libgomp), which keeps a pool of worker
threads for each thread that runs a parallel op. Once two such pools exist (the models loaded
on the main thread, then decoding on a worker thread), there are more of these threads than
cores, and libgomp stops spinning between parallel regions: every op then waits for its
workers to wake. Measured on 2 cores: a 4-bit matmul of SmolLM2's MLP takes 29 us on the main
thread and 86 us on a worker thread once the main thread has run torch (29 us when it never
has); a whole decoding step 12.9 against 20.8 ms, which was most of `serve`'s per-token time.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class TorchThread:
    """A daemon thread that runs submitted calls one after another, in order."""

    def __init__(self, name: str = "extok-torch"):
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the thread after what was submitted before; its future."""
        future: Future = Future()
        self._tasks.put((fn, future))
        return future

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run `fn(*args, **kwargs)` on the thread and wait for it: its result, or its
        exception raised here."""
        return self.submit(functools.partial(fn, *args, **kwargs)).result()

    def join(self, timeout: float | None = None) -> None:
        """Stop once what was submitted has run (at most `timeout` seconds' wait)."""
        self._tasks.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            fn, future = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, as concurrent.futures does
                future.set_exception(exc)

"""Ray for the Ray engine: importing it (an optional extra), a session per run, and errors from
its workers as this package's one-line errors.

Nothing here imports Ray at module level: `import extok_rag.indexing` never does, and a missing
`ray` extra is one IndexEngineError naming it, raised only when the Ray engine is asked for.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from extok_rag import errors
from extok_rag.errors import ExtokError, IndexEngineError

MISSING_RAY = "the Ray engine needs Ray: pip install 'extok-rag[ray]'"


def require_ray():
    """The `ray` module, or IndexEngineError naming the extra to install."""
    try:
        import ray
        import ray.data  # the `data` extra
    except ImportError as exc:
        raise IndexEngineError(MISSING_RAY) from exc
    return ray


def check_ray(address: str | None) -> None:
    """IndexEngineError now if Ray is missing or `address` does not answer (a command can
    fail in one line before loading models)."""
    require_ray()
    if address:
        check_address(address)


@contextmanager
def ray_session(address: str | None = None, workers: int | None = None) -> Iterator[None]:
    """Ray for this run: the instance already initialised in this process, else a connection
    to `address`, else a local instance with `workers` CPUs (default: all); a connection or
    instance made here is closed at the end."""
    ray = require_ray()
    if ray.is_initialized():
        yield
        return
    if address:
        check_address(address)
    try:
        with warnings.catch_warnings():
            # Ray forks its daemons from this process, which has LanceDB loaded; they exec at
            # once, so LanceDB's fork caution does not apply.
            warnings.filterwarnings("ignore", "lancedb fork support", RuntimeWarning)
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            else:  # our own instance: its start-up notices are not the user's business
                ray.init(
                    num_cpus=workers or os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise IndexEngineError(f"could not start or reach {where}: {_first_line(exc)}") from exc
    try:
        yield
    finally:
        ray.shutdown()


def check_address(address: str) -> None:
    """IndexEngineError at once if `address` (HOST:PORT of a Ray head's GCS) refuses or does
    not answer within 5 s; `ray.init` would retry for minutes. Other forms ("auto",
    "ray://...") are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise IndexEngineError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head` and pass its address, or omit --address for a local instance"
        ) from None


@contextmanager
def quiet_data_context() -> Iterator[None]:
    """Ray Data as this engine needs it: output in input order (row ids and the table's
    physical order are those of the local engine), no progress bars or plan logs of its own
    (the CLI draws its bars). Restored afterwards."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = (
        ctx.execution_options.preserve_order,
        ctx.enable_progress_bars,
        ctx.print_on_execution_start,
    )
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    data_logger.setLevel(logging.ERROR)  # e.g. "progress bars disabled"
    try:
        yield
    finally:
        (
            ctx.execution_options.preserve_order,
            ctx.enable_progress_bars,
            ctx.print_on_execution_start,
        ) = saved
        data_logger.setLevel(level)


@contextmanager
def worker_errors() -> Iterator[None]:
    """Errors from Ray workers as this package's one-line errors. Ray passes a worker's
    exception back as text inside its own (the original object is gone), so an
    `extok_rag.errors.X: message` line in it becomes that error again; anything else becomes
    an IndexEngineError naming the worker's exception."""
    from ray.exceptions import RayError

    try:
        yield
    except RayError as exc:
        raise worker_error(exc) from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXTOK_LINE = re.compile(r"^extok_rag\.errors\.(\w+): (.+)$", re.MULTILINE)
_ERROR_LINE = re.compile(r"^((?:\w+\.)*\w*(?:Error|Exception)): (.+)$", re.MULTILINE)


def worker_error(exc: BaseException) -> ExtokError:
    """The one-line error for a Ray error `exc` (see `worker_errors`)."""
    text = _ANSI.sub("", "\n".join(str(e) for e in _chain(exc)))
    for match in _EXTOK_LINE.finditer(text):
        kind = getattr(errors, match[1], None)
        if isinstance(kind, type) and issubclass(kind, ExtokError):
            return kind(match[2])
    for match in _ERROR_LINE.finditer(text):
        if not match[1].startswith("ray."):
            return IndexEngineError(f"a Ray worker failed: {match[1]}: {match[2]}")
    return IndexEngineError(f"the Ray engine failed: {_first_line(exc)}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__, getattr(e, "cause", None)])


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__

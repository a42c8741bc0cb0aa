"""The decoding step in C++ (`native_step.cpp`): built once per machine, kept in the cache,
loaded by every later process.

`LlamaStep` (decode_step.py) computes its step through this module's `Step` once it is loaded,
and through its own Python loop until then: the same logits bit for bit (tests), ~6 ms faster
per token at batch 1 here (docs/benchmarks.md, `decode-speed`).

The build (torch's C++ extension JIT: the machine's C++ compiler and ninja) takes ~20 s and is
paid where it pays:
- `load()`: a cached build, never a compile. `ask` uses this: a one-shot answer of ~30 tokens
  saves ~0.2 s, far less than the compile.
- `build_in_background()`: `serve`, `chat`, `read` and `eval qa`, which decode thousands of
  tokens, start the build on a thread at start-up and keep decoding in Python until it lands.
- `extok-rag models --build` builds it in the foreground (and retries a failed build, which
  the others try again only after a day).

The build lands in `home_dir()/native/<key>/`, keyed by the source, torch, Python and the
platform, through a private temporary directory and an atomic rename: an interrupted build
(Ctrl-C, kill -9) leaves no partial file where a later process looks. A missing compiler or a
failed build leaves the Python step in use, with one line on the log; `EXTOK_RAG_NATIVE=0`
turns the native step off.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType

import torch

from extok_rag.config import home_dir

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native_step.cpp")
NAME = "extok_native_step"
FLAGS = ["-O3", "-ffp-contract=off"]  # no fused multiply-add where ATen rounds in between
FAILED = "build-failed.txt"  # beside the build: why the last build failed
RETRY_AFTER_S = 24 * 3600

# how a projection's weights reach the C++ step (`Proj::Kind` in native_step.cpp)
PROJ_LINEAR = 0  # the weights themselves, one `at::linear` each (outputs concatenated)
PROJ_ONEDNN = 1  # one oneDNN-packed bf16 weight
PROJ_INT4 = 2  # torch's int4 kernel: packed, scales_zeros of each map

_lock = threading.Lock()
_module: ModuleType | None = None
_failure: str | None = None  # why this process's build failed (it is not retried)


def enabled() -> bool:
    return os.environ.get("EXTOK_RAG_NATIVE", "1") != "0"


def build_dir() -> Path:
    """Where this source's build for this torch, Python and platform lives."""
    return home_dir() / "native" / _key()


@functools.cache
def _key() -> str:
    return hashlib.sha256(
        b"\0".join(
            s.encode() if isinstance(s, str) else s
            for s in (
                SOURCE.read_bytes(),
                torch.__version__,
                sys.implementation.cache_tag or "",
                platform.machine(),
                sys.platform,
                " ".join(FLAGS),
            )
        )
    ).hexdigest()[:16]


def library_path() -> Path:
    return build_dir() / f"{NAME}{importlib.machinery.EXTENSION_SUFFIXES[0]}"


def loaded() -> ModuleType | None:
    """The module if this process has loaded it (no file access: `LlamaStep` asks every step)."""
    return _module


def failure() -> str | None:
    """Why the native step could not be built: this process's attempt, else the last one
    written down beside the build."""
    if _failure is not None:
        return _failure
    marker = library_path().with_name(FAILED)
    return marker.read_text(errors="replace").strip() if marker.is_file() else None


def load(build: bool = False, retry: bool = False) -> ModuleType | None:
    """The module: already loaded, else the cached build, else (`build`) compiled now. None
    where the native step is off or cannot be built here (`failure()` says why). A failed
    build is written down beside the build and not tried again for a day unless `retry`."""
    global _module, _failure
    if _module is not None or not enabled():
        return _module
    with _lock:
        if _module is not None:
            return _module
        path = library_path()
        if path.is_file():
            try:
                _module = _import(path)
                return _module
            except ImportError as err:  # a damaged file: rebuilt below, if asked to
                log.warning("native decoding step: %s is unreadable (%s)", path, err)
                path.unlink(missing_ok=True)
        if not build or (_failure is not None and not retry):
            return None
        marker = path.with_name(FAILED)
        if not retry and _recent(marker):
            _failure = marker.read_text(errors="replace").strip()
            return None
        try:
            _module = _compile(path)
            marker.unlink(missing_ok=True)
        except Exception as err:  # any failure leaves the Python step in use
            _failure = _one_line(err)
            log.warning("native decoding step not built (%s); decoding stays in Python", _failure)
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(_failure + "\n")
            except OSError:
                pass
        return _module


def build_in_background() -> threading.Thread | None:
    """Start `load(build=True)` on a daemon thread unless the module is loaded or off; a
    `LlamaStep` switches to it at its next step once it lands."""
    if _module is not None or not enabled() or _failure is not None:
        return None
    thread = threading.Thread(target=load, kwargs={"build": True}, name="native-build", daemon=True)
    thread.start()
    return thread


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "Step"):
        raise ImportError(f"{path} has no Step")
    return module


def _compile(target: Path) -> ModuleType:
    """Build into a private temporary directory beside `target`, then rename into place."""
    from torch.utils import cpp_extension

    _ninja_on_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(target.parent)
    started = time.perf_counter()
    log.info("building the native decoding step (once per machine and torch version, ~20 s)")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="build-") as tmp:
        module = cpp_extension.load(
            NAME, [str(SOURCE)], extra_cflags=FLAGS, build_directory=tmp, verbose=False
        )
        staged = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.copyfile(module.__file__, staged)
        os.replace(staged, target)
    log.info("native decoding step built in %.0f s: %s", time.perf_counter() - started, target)
    return module


def _recent(marker: Path) -> bool:
    try:
        return time.time() - marker.stat().st_mtime < RETRY_AFTER_S
    except OSError:
        return False


def _ninja_on_path() -> None:
    """torch's JIT runs `ninja` from PATH; the `ninja` wheel puts it beside this Python,
    which is not on PATH when the venv is not activated."""
    if shutil.which("ninja") is None:
        bin_dir = Path(sys.executable).parent
        if (bin_dir / "ninja").is_file():
            os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def _remove_stale_builds(parent: Path, age_s: float = 3600.0) -> None:
    """Temporary build directories an interrupted build (kill -9) left behind."""
    for stale in parent.glob("build-*"):
        try:
            if time.time() - stale.stat().st_mtime > age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = next((line for line in text if "error" in line.lower()), text[0] if text else "")
    return f"{type(err).__name__}: {first[:200]}"

"""Real `extok-rag` processes without paying Python's imports per process: a fork server.

One server process imports the CLI's heavy modules (torch, transformers, LanceDB) once; each
`spawn` forks a child of it that runs the given code as `python -c CODE ARGS` would, with its
own pid, stdout and stderr (named pipes), environment additions and file-size limit. The child
is a separate process like any other: SIGKILL, locks and rlimits act on it alone. The test
process sees a Popen-like `ForkedProcess` (pid, stdout, stderr, wait, poll, send_signal, kill,
communicate, returncode: -N when killed by signal N).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SERVER = r"""
import importlib, json, os, resource, select, signal, sys, traceback
for module in sys.argv[1:]:  # what an `index` run imports; a module missing here is skipped
    try:
        importlib.import_module(module)
    except ImportError:
        pass

def child(request):
    os.setpgid(0, 0)
    stdout = os.open(request["stdout"], os.O_WRONLY)
    stderr = os.open(request["stderr"], os.O_WRONLY)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.environ.update(request["env"])
    if request["file_size_limit"]:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past it fail with EFBIG
        limit = request["file_size_limit"]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.argv = ["-c", *request["args"]]
    code = 0
    try:
        exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

def report(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()

buffered = b""
while True:
    ready, _, _ = select.select([0], [], [], 0.01)
    if ready:
        data = os.read(0, 65536)
        if not data:
            break
        buffered += data
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            pid = os.fork()
            if pid == 0:
                child(json.loads(line))
            report({"started": pid})
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        report({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
"""

PRELOAD = [
    "torch",
    "transformers",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.bert.modeling_bert",
    "transformers.models.bert.tokenization_bert_fast",
    "transformers.models.llama.modeling_llama",
    "lancedb",
    "lancedb.index",
    "faiss",
    "llama_index.core",  # the document readers
    "extok_rag.cli",
    "extok_rag.indexes",
    "extok_rag.indexing",
    "extok_rag.indexing.encoding",
    "extok_rag.models.embedder",
    "extok_rag.models.extensible_tokenizer",
    "extok_rag.models.llm",
]


class ForkServer:
    """The server process and the exits it reports. Close with `close`."""

    def __init__(self, env: dict[str, str]) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="extok-forks-"))
        self._proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, *PRELOAD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._exits: dict[int, int] = {}
        self._started: list[int] = []
        self._changed = threading.Condition()
        self._lock = threading.Lock()  # one spawn at a time: replies come in order
        self._count = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            message = json.loads(line)
            with self._changed:
                if "started" in message:
                    self._started.append(message["started"])
                else:
                    self._exits[message["exited"]] = message["code"]
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def spawn(
        self,
        code: str,
        args: list[str],
        env: dict[str, str] | None = None,
        file_size_limit: int | None = None,
    ) -> ForkedProcess:
        """`python -c CODE ARGS` as a forked child, with `env` added to its environment."""
        with self._lock:
            self._count += 1
            out, err = self._dir / f"{self._count}.out", self._dir / f"{self._count}.err"
            os.mkfifo(out)
            os.mkfifo(err)
            request = {"code": code, "args": args, "env": env or {}}
            request |= {"stdout": str(out), "stderr": str(err)}
            request["file_size_limit"] = file_size_limit
            with self._changed:
                before = len(self._started)
                self._proc.stdin.write(json.dumps(request) + "\n")
                self._proc.stdin.flush()
                # the child opens both pipes for writing before it runs anything
                stdout, stderr = open(out), open(err)  # noqa: SIM115 (the process owns them)
                if not self._changed.wait_for(lambda: len(self._started) > before, 60):
                    raise RuntimeError("fork server did not start a process")
                pid = self._started[before]
            out.unlink()
            err.unlink()
        return ForkedProcess(self, pid, stdout, stderr)

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        with self._changed:
            self._changed.wait_for(
                lambda: pid in self._exits or self._proc.poll() is not None, timeout
            )
            return self._exits.get(pid)

    def close(self) -> None:
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()
        os.rmdir(self._dir)


class ForkedProcess:
    """The Popen calls the tests use, for a child of the fork server."""

    def __init__(self, server: ForkServer, pid: int, stdout, stderr) -> None:
        self._server = server
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.exit_code(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._server.exit_code(self.pid, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # not yet reaped, so the pid is still this process's
            # the fork server may have reaped it since: it ended, a no-op
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(9)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """(stdout, stderr) read to their ends, then waits; like Popen.communicate."""
        got: dict[str, str] = {}
        reader = threading.Thread(target=lambda: got.setdefault("err", self.stderr.read()))
        reader.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        out = self.stdout.read()
        reader.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        self.wait(None if deadline is None else max(deadline - time.monotonic(), 0))
        self.stdout.close()
        self.stderr.close()
        return out, got.get("err", "")

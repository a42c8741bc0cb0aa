"""Fault injection on real `extok-rag index` processes (tiny models): SIGKILL at random moments
of runs over a changing corpus, then one uninterrupted run must give exactly a clean build's
rows; and a disk-full run (a file-size limit) must end in one error line with the previous
index intact.

Seed: EXTOK_FAULT_SEED (default 0). The long variant (EXTOK_FAULT_KILLS kills, default 20) is
marked `slow` and runs only with EXTOK_SLOW_TESTS=1. The processes are forked from one server
per module that imported torch, transformers and LanceDB once (cli_procs.py): each is still a
process of its own, killed, limited and exiting alone, but starts in a fraction of a second.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from extok_rag.indexes import read_manifest
from extok_rag.indexing import open_index

from .cli_procs import ForkedProcess, ForkServer
from .test_indexer import rows

SEED = int(os.environ.get("EXTOK_FAULT_SEED", "0"))
LONG_KILLS = int(os.environ.get("EXTOK_FAULT_KILLS", "20"))

# `extok-rag index`, with small table commits (many commit points to be killed at) and
# compaction every 3 fragments. It prints "ready" as `build_index` starts (the LLM loaded),
# "writing" before its first table write and "done" when `build_index` returns, so kill times
# can be drawn over the run's own work or over its writes alone (a tiny-model run spends most
# of its time loading models and reading, and its process exit takes longer than its writes).
FAULT_CLI = """
import functools, sys
import extok_rag.indexing.request as request
from extok_rag.cli import main
from extok_rag.indexes import ChunkTable
request.IndexSettings = functools.partial(
    request.IndexSettings, commit_tokens=512, compact_fragments=3
)
build_index = request.build_index

def announced(*args, **kwargs):
    print("ready", flush=True)
    report = build_index(*args, **kwargs)
    print("done", flush=True)
    return report

def first_write(write):
    def announce(*args, **kwargs):
        if not ChunkTable.writing:
            ChunkTable.writing = True
            print("writing", flush=True)
        return write(*args, **kwargs)
    return announce

request.build_index = announced
ChunkTable.writing = False
ChunkTable.add = first_write(ChunkTable.add)
ChunkTable.delete_docs = first_write(ChunkTable.delete_docs)
sys.argv[0] = "extok-rag"
main()
"""

WORDS = ["state", "chunk", "token", "frozen", "model", "reads", "compressed", "index", "commit"]


def document(rng: random.Random, n: int) -> str:
    paragraphs = []
    for _ in range(rng.randint(1, n)):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 40)))
        paragraphs.append(f"{words.capitalize()}.")
    return "\n\n".join(paragraphs) + "\n"


def mutate(corpus: Path, rng: random.Random, round_: int) -> None:
    """Rewrite two documents, delete one, add one."""
    docs = sorted(corpus.glob("*.md"))
    for path in rng.sample(docs, min(2, len(docs))):
        path.write_text(document(rng, 8))
    if len(docs) > 4:
        rng.choice(docs).unlink()
    (corpus / f"new{round_}.md").write_text(document(rng, 8))


class Run:
    """A started `index` process and the times its stdout lines ("ready", "writing", "done")
    arrived, read by a thread so the test can wait for one while the run goes on."""

    def __init__(self, proc: ForkedProcess) -> None:
        self.proc = proc
        self.times: dict[str, float] = {}
        self.stderr: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr = threading.Thread(target=lambda: self.stderr.extend(proc.stderr))
        self._stderr.start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self._saw(line.strip())
        self._saw("eof")

    def _saw(self, name: str) -> None:
        with self._seen:
            self.times.setdefault(name, time.monotonic())
            self._seen.notify_all()

    def wait_for(self, *names: str) -> None:
        """Until one of `names` (or the end of stdout) has been printed."""
        with self._seen:
            self._seen.wait_for(lambda: any(n in self.times for n in (*names, "eof")), 300)

    def finish(self) -> tuple[int, str]:
        self.proc.wait(timeout=300)
        self._stderr.join()
        return self.proc.returncode, "".join(self.stderr)

    def seconds(self, since: str) -> float | None:
        """From line `since` to "done", if both were printed."""
        if since in self.times and "done" in self.times:
            return self.times["done"] - self.times[since]
        return None


class Runner:
    """Starts `extok-rag index CORPUS --index IDX` with the tiny models."""

    def __init__(self, server: ForkServer, llm_dir: Path, embedder_dir: Path) -> None:
        self.server = server
        self.models = ["--llm", str(llm_dir), "--embedder", str(embedder_dir)]
        self.models += ["--chunk-tokens", "64", "--device", "cpu"]

    def start(self, corpus: Path, idx: Path, file_size_limit: int | None = None) -> Run:
        """A run; `file_size_limit`: bytes past which its writes fail with EFBIG (an OSError,
        not a SIGXFSZ kill)."""
        args = ["index", str(corpus), "--index", str(idx), *self.models]
        run = Run(self.server.spawn(FAULT_CLI, args, file_size_limit=file_size_limit))
        run.wait_for("ready")
        return run

    def run(self, corpus: Path, idx: Path, file_size_limit: int | None = None):
        run = self.start(corpus, idx, file_size_limit)
        return (*run.finish(), run)


@pytest.fixture(scope="module")
def runner(tiny_llm_dir, tiny_embedder_dir):
    server = ForkServer({**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    yield Runner(server, tiny_llm_dir, tiny_embedder_dir)
    server.close()


def assert_consistent(idx: Path) -> None:
    """The committed snapshot: no duplicates, every document whole, counts agree."""
    snap = open_index(idx)
    stored = rows(idx)  # asserts no duplicate chunk ids
    positions: dict[str, list[int]] = {}
    for chunk in stored.values():
        positions.setdefault(chunk.doc_path, []).append(chunk.position)
    for doc, got in positions.items():
        assert sorted(got) == list(range(len(got))), f"{doc} is not whole"
    assert len(stored) == len(snap.vectors) == snap.manifest.counts.chunks


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, x in a.items():
        y = b[key]
        assert (x.doc_path, x.doc_hash, x.position, x.text, x.n_tokens) == (
            y.doc_path,
            y.doc_hash,
            y.position,
            y.text,
            y.n_tokens,
        )
        assert x.states.dtype == y.states.dtype and x.states.tobytes() == y.states.tobytes(), key
        np.testing.assert_array_equal(x.vector, y.vector)


def phase_at_kill(idx: Path, committed_before: int) -> str:
    """Where a kill landed: before the run wrote anything, amid its writes, or after its
    commit (during the cleanup that follows the manifest write)."""
    if read_manifest(idx).table_version != committed_before:
        return "after commit"
    return "amid writes" if (idx / "pending.json").exists() else "before writes"


def kill_at_random_moments(tmp_path: Path, runner: Runner, kills: int, seed: int) -> dict:
    """Run the index over a changing corpus, SIGKILLing runs at random moments; returns how
    many kills landed in each phase. After each kill the committed index must be consistent."""
    rng = random.Random(seed)
    corpus, idx = tmp_path / "corpus", tmp_path / "idx"
    corpus.mkdir()
    for i in range(16):
        (corpus / f"doc{i}.md").write_text(document(rng, 12))
    code, err, first = runner.run(corpus, idx)  # a whole build: it scales the kill times
    assert code == 0, err
    work_s, write_s = first.seconds("ready"), first.seconds("writing")
    killed, round_, phases = 0, 0, {}
    while killed < kills:
        round_ += 1
        assert round_ <= 4 * kills + 4, f"only {killed} of {kills} kills landed"
        if rng.random() < 0.7:  # sometimes a killed run is retried on the same corpus
            mutate(corpus, rng, round_)
        committed = read_manifest(idx).table_version
        run = runner.start(corpus, idx)
        if rng.random() < 0.5:  # half the kills over the run's work, half over its writes
            run.wait_for("writing", "done")
            start, window = run.times.get("writing", time.monotonic()), write_s
        else:
            start, window = run.times["ready"], work_s
        delay = start + rng.uniform(0, window) - time.monotonic()
        try:
            run.proc.wait(timeout=max(delay, 0))
        except subprocess.TimeoutExpired:
            run.proc.send_signal(signal.SIGKILL)  # a no-op if it has just exited
        code, err = run.finish()
        if code == -signal.SIGKILL:
            killed += 1
            phase = phase_at_kill(idx, committed)
            phases[phase] = phases.get(phase, 0) + 1
        else:
            assert code == 0, err
            # Runs get shorter as their work is kept: scale the next kills to this one.
            work_s = max(run.seconds("ready") or work_s, 0.3)
            write_s = max(run.seconds("writing") or write_s, 0.1)
        assert_consistent(idx)
    code, err, _ = runner.run(corpus, idx)  # the final, uninterrupted run
    assert code == 0, err
    assert not (idx / "pending.json").exists()
    code, err, _ = runner.run(corpus, tmp_path / "clean")
    assert code == 0, err
    assert_bitwise_equal(rows(idx), rows(tmp_path / "clean"))
    print(f"seed {seed}: {killed} kills in {round_} runs: {phases}")
    return phases


def test_sigkill_at_random_moments_then_one_run_equals_a_clean_build(tmp_path, runner):
    assert sum(kill_at_random_moments(tmp_path, runner, kills=3, seed=SEED).values()) == 3


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EXTOK_SLOW_TESTS"), reason="set EXTOK_SLOW_TESTS=1")
def test_many_sigkills_at_random_moments(tmp_path, runner):
    phases = kill_at_random_moments(tmp_path, runner, kills=LONG_KILLS, seed=SEED)
    assert sum(phases.values()) == LONG_KILLS >= 20


def test_disk_full_ends_in_one_error_line_and_keeps_the_index(corpus, tmp_path, runner):
    idx = tmp_path / "idx"
    small = tmp_path / "small"
    small.mkdir()
    for name in ("a.md", "c.rst", "page.html"):
        (small / name).write_bytes((corpus / name).read_bytes())
    code, err, _ = runner.run(small, idx)
    assert code == 0, err
    before, committed = rows(idx), read_manifest(idx).table_version
    (small / "big.md").write_bytes((corpus / "big.md").read_bytes())  # ~0.5 MB of states

    code, err, _ = runner.run(small, idx, file_size_limit=256 * 1024)
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "could not write index" in errors[0] and "File too large" in errors[0]
    assert "the last committed index is intact" in errors[0]
    assert read_manifest(idx).table_version == committed
    assert_bitwise_equal(rows(idx), before)  # readers still get the previous index

    code, err, _ = runner.run(small, idx)  # space again: the run finishes the job
    assert code == 0, err
    code, err, _ = runner.run(small, tmp_path / "clean")
    assert code == 0, err
    assert_bitwise_equal(rows(idx), rows(tmp_path / "clean"))


def test_storage_errors_name_the_os_reason_and_let_others_through(tmp_path):
    import errno

    from extok_rag.errors import IndexStoreError
    from extok_rag.indexing.build import storage_errors

    raised = [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("lance error: LanceError(IO): File too large (os error 27), x.rs:258:9"),
        RuntimeError(
            "Error in faiss::write_index: write error in v.faiss.tmp (No space left on device)"
        ),
    ]
    for exc in raised:
        with pytest.raises(IndexStoreError) as info, storage_errors(tmp_path):
            raise exc
        message = str(info.value)
        assert message.startswith(f"could not write index {tmp_path}: ")
        assert ("No space left on device" in message) != ("File too large" in message)
        assert ".rs:" not in message and "\n" not in message
    with pytest.raises(RuntimeError, match="unrelated"), storage_errors(tmp_path):
        raise RuntimeError("unrelated")
    with pytest.raises(FileNotFoundError), storage_errors(tmp_path):  # not a storage failure
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "model.safetensors")

"""One writer at a time, with real processes: `extok-rag index` runs on the tiny models, one of
them paused after its first table commit, while a second run and readers try the same index.
The processes are forked from one server that imported the CLI's modules once (cli_procs.py)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from extok_rag.errors import IndexStoreError
from extok_rag.indexes import ChunkTable, read_manifest
from extok_rag.indexing import open_index

from .cli_procs import ForkedProcess, ForkServer
from .test_indexer import rows

# `extok-rag index`, but pausing after its first table commit until the file GO exists.
PAUSED_CLI = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from extok_rag.indexes import ChunkTable

    go = Path(os.environ["EXTOK_TEST_GO"])
    add = ChunkTable.add

    def add_then_wait(self, records):
        row_ids = add(self, records)
        if not go.exists():
            print("paused", flush=True)
            deadline = time.monotonic() + 120
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return row_ids

    ChunkTable.add = add_then_wait
    from extok_rag.cli import main
    sys.argv = ["extok-rag", *sys.argv[1:]]
    main()
    """
)
CLI = "import sys\nfrom extok_rag.cli import main\nsys.argv[0] = 'extok-rag'\nmain()\n"


@pytest.fixture(scope="module")
def server():
    """Forks the processes of this module's tests (imports paid once; cli_procs.py)."""
    forks = ForkServer({**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    yield forks
    forks.close()


@pytest.fixture
def cli(tmp_path, tiny_llm_dir, tiny_embedder_dir, server):
    """run(args, paused=False) -> a Popen-like process of `extok-rag ARGS` (tiny models added
    to `index`), forked from `server`."""
    env = {"EXTOK_TEST_GO": str(tmp_path / "go")}
    models = ["--llm", str(tiny_llm_dir), "--embedder", str(tiny_embedder_dir)]
    models += ["--chunk-tokens", "64", "--device", "cpu"]
    started = []

    def run(args: list[str], paused: bool = False) -> ForkedProcess:
        args = [*args, *models] if args[0] == "index" else args
        proc = server.spawn(PAUSED_CLI if paused else CLI, args, env)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def finish(proc: ForkedProcess, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_paused(proc: ForkedProcess) -> None:
    line = proc.stdout.readline().strip()
    if line != "paused":
        _, out, err = finish(proc)
        pytest.fail(f"writer did not pause: {line!r} {out!r} {err[-2000:]}")


def info_json(cli, idx: Path) -> dict:
    code, out, err = finish(cli(["info", str(idx), "--json"]))
    assert code == 0, err
    return json.loads(out)


def test_second_index_run_is_refused_and_readers_see_the_last_commit(corpus, tmp_path, cli):
    idx = tmp_path / "idx"
    go = tmp_path / "go"
    first = ["index", str(corpus), "--index", str(idx), "--exclude", "big.md"]

    # Two runs on a new index (the reported race): the second exits with one clear line.
    writer = cli(first, paused=True)
    wait_paused(writer)
    code, _, err = finish(cli(first))
    assert code == 1, err
    assert f"is being written by another process (pid {writer.pid} on " in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1 and errors[0].endswith("at a time)"), err
    with pytest.raises(IndexStoreError, match="no index manifest"):  # nothing committed yet
        open_index(idx)
    go.touch()
    code, _, err = finish(writer)
    assert code == 0, err
    before = rows(idx)
    committed = read_manifest(idx).table_version

    # A second run adds big.md; while it is paused mid-write, readers see the first commit.
    go.unlink()
    writer = cli(["index", str(corpus), "--index", str(idx)], paused=True)
    wait_paused(writer)
    assert ChunkTable.open(idx).version > committed and (idx / "pending.json").exists()
    shown = info_json(cli, idx)
    assert shown["table_version"] == committed and shown["chunks"] == len(before)
    assert rows(idx).keys() == before.keys()
    go.touch()
    code, _, err = finish(writer)
    assert code == 0, err
    after = rows(idx)
    assert before.keys() < after.keys()
    assert {c.doc_path for c in after.values()} - {c.doc_path for c in before.values()} == {
        "big.md"
    }
    assert info_json(cli, idx)["table_version"] > committed


def test_info_json_gives_bytes_per_token(corpus, tmp_path, cli):
    idx = tmp_path / "idx"
    code, _, err = finish(cli(["index", str(corpus), "--index", str(idx), "--exclude", "big.md"]))
    assert code == 0, err
    shown = info_json(cli, idx)
    assert shown["tokens"] > 0 and shown["chunks"] == shown["table_rows"] > 0
    assert shown["state_encoding"] == "int8"  # the default of a new index
    assert 0 < shown["state_bytes_per_token"] < shown["bytes_per_token"]
    assert shown["bytes_per_token"] <= shown["bytes_on_disk"] / shown["tokens"]

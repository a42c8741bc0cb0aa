"""The Ray engine (`extok-rag index --engine ray`) on a local Ray instance with 2 CPU workers
and the tiny models: the same rows as the local engine, bit for bit, on a first build and an
incremental update; worker errors and set-up errors as one line."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from extok_rag.errors import IncompatibleModelError, IndexEngineError
from extok_rag.indexes import ChunkTable, read_manifest
from extok_rag.indexing import build_index, open_index

from .conftest import PROSE

ray = pytest.importorskip("ray")
from extok_rag.indexing.ray_engine import RayEngine  # noqa: E402
from extok_rag.indexing.ray_tasks import WorkerModels  # noqa: E402


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module (start-up takes seconds); the engine uses it."""
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    yield
    ray.shutdown()


def engine(llm_dir, embedder_dir) -> RayEngine:
    models = WorkerModels(str(llm_dir), None, str(embedder_dir), dtype="float32")
    return RayEngine(models, workers=2, device="cpu", files_per_task=2)  # pass 1: 5 tasks


def table_rows(index_dir) -> tuple[list[int], dict]:
    """(row ids in the table's physical order, {row_id: the row's fields and bytes})."""
    snap = open_index(index_dir)
    order = snap.table.vectors()[0].tolist()
    rows = {}
    for c in snap.table.fetch(order):
        fields = (c.chunk_id, c.doc_path, c.doc_hash, c.position, c.text, c.n_tokens)
        rows[c.row_id] = (*fields, c.states.dtype, c.states.tobytes(), c.vector.tobytes())
    return order, rows


def assert_same_index(a, b) -> None:
    """Same rows (ids, texts, states and vectors bitwise), in the same order, same counts,
    and FAISS files that answer alike."""
    assert table_rows(a) == table_rows(b)
    ma, mb = read_manifest(a), read_manifest(b)
    assert (ma.counts, ma.llm, ma.tokenizer, ma.embedder, ma.stride, ma.chunking) == (
        mb.counts,
        mb.llm,
        mb.tokenizer,
        mb.embedder,
        mb.stride,
        mb.chunking,
    )
    sa, sb = open_index(a), open_index(b)
    queries = sa.table.vectors()[1][::5]
    assert len(sa.vectors) == len(sb.vectors)
    for got, want in zip(sa.vectors.search(queries, 4), sb.vectors.search(queries, 4), strict=True):
        np.testing.assert_array_equal(got, want)


def test_ray_build_equals_the_local_engine_bitwise(
    ray_instance, corpus, tmp_path, make_models, settings, tiny_llm_dir, tiny_embedder_dir
):
    local, distributed = tmp_path / "local", tmp_path / "ray"
    build_index(corpus, local, make_models(), settings)
    driver = make_models()
    report = build_index(
        corpus, distributed, driver, settings, engine=engine(tiny_llm_dir, tiny_embedder_dir)
    )
    assert driver.calls == {"tokenizer": 0, "embedder": 0}  # encoding ran in the actors
    assert "tokenizer" not in driver.__dict__ and "embedder" not in driver.__dict__
    assert len(report.skipped) == 5 and report.chunks_written == report.counts.chunks > 20
    assert not (distributed / "pending.json").exists()
    assert_same_index(local, distributed)


class Crash(BaseException):
    """Stands in for a kill (BaseException: nothing may catch it)."""


def crashing(*args, **kwargs):
    raise Crash


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EXTOK_SLOW_TESTS"), reason="set EXTOK_SLOW_TESTS=1")
def test_ray_update_equals_the_local_engine_bitwise(
    ray_instance,
    corpus,
    tmp_path,
    make_models,
    settings,
    tiny_llm_dir,
    tiny_embedder_dir,
    monkeypatch,
):
    """Changed, deleted and new files: the same plan and again the same rows; also when each
    engine's run died amid its writes (after its deletes) and the next run finished it."""
    local, distributed = tmp_path / "local", tmp_path / "ray"
    ray_engine = engine(tiny_llm_dir, tiny_embedder_dir)
    build_index(corpus, local, make_models(), settings)
    build_index(corpus, distributed, make_models(), settings, engine=ray_engine)

    (corpus / "c.rst").write_text("Gamma\n=====\n\nRewritten, and longer. " * 4)
    (corpus / "page.html").unlink()
    (corpus / "new.md").write_text("A new document about compression.\n" * 5)
    build_index(corpus, local, make_models(), settings)
    update = build_index(corpus, distributed, make_models(), settings, engine=ray_engine)
    assert [f.rel for f in update.plan.changed] == ["c.rst"]
    assert "new.md" in [f.rel for f in update.plan.added]  # with the bad files, never stored
    assert update.plan.deleted == ["page.html"]
    assert_same_index(local, distributed)

    (corpus / "a.md").write_text("# Alpha, rewritten\n\nOnly this sentence now.\n")
    (corpus / "sub" / "b.txt").unlink()
    with monkeypatch.context() as patch:  # the local run dies at its first append
        patch.setattr(ChunkTable, "add", crashing)
        with pytest.raises(Crash):
            build_index(corpus, local, make_models(), settings)
    committed = table_rows(distributed)
    with monkeypatch.context() as patch:  # the Ray run dies at its first group's append
        patch.setattr(ChunkTable, "append_stream", crashing)
        with pytest.raises(Crash):
            build_index(corpus, distributed, make_models(), settings, engine=ray_engine)
    assert table_rows(distributed) == committed and (distributed / "pending.json").exists()
    build_index(corpus, local, make_models(), settings)
    # The next run goes on from the dead run's deletes (pending.json is its own): the
    # changed file is new now, the removed one gone.
    resumed = build_index(corpus, distributed, make_models(), settings, engine=ray_engine)
    assert "a.md" in [f.rel for f in resumed.plan.added] and not resumed.plan.deleted
    assert_same_index(local, distributed)
    again = build_index(corpus, distributed, make_models(), settings, engine=ray_engine)
    assert again.up_to_date


# `extok-rag index --engine ray` with table commits of 512 tokens and float32 actors (bitwise
# comparable with the in-process builds here whatever the CPU); it prints "committed" after its
# first group's table commit, then waits there to be killed.
KILLED_RAY_CLI = """
import functools, sys, time
import extok_rag.config as config
import extok_rag.indexing.request as request
from extok_rag.cli import main
from extok_rag.indexes import ChunkTable
request.IndexSettings = functools.partial(request.IndexSettings, commit_tokens=512)
config.fastest_dtype = lambda device: "float32"
append = ChunkTable.append_stream

def append_then_wait(self, batches):
    appended = append(self, batches)
    print("committed", flush=True)
    time.sleep(600)
    return appended

ChunkTable.append_stream = append_then_wait
sys.argv[0] = "extok-rag"
main()
"""


def run_until_first_commit(args: list[str], timeout: float = 300) -> subprocess.Popen:
    """Start `extok-rag ARGS` (KILLED_RAY_CLI) in a session of its own, and return once it
    printed "committed"; pytest.fail with its output if it ends or times out first."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RAY_CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the Ray daemons it starts join it
    )
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "committed":
                seen.set()
        seen.set()

    threading.Thread(target=read, daemon=True).start()
    if not seen.wait(timeout) or "committed\n" not in lines:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"no first commit within {timeout} s:\n{''.join(lines)[-3000:]}")
    return proc


def session_processes(sid: int) -> list[int]:
    """Live processes of session `sid` (Linux /proc), zombies excluded."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != sid:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(int(entry.name))
    return alive


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EXTOK_SLOW_TESTS"), reason="set EXTOK_SLOW_TESTS=1")
def test_killed_ray_run_keeps_its_committed_groups_and_a_rerun_equals_an_uninterrupted_one(
    ray_instance, corpus, tmp_path, make_models, settings, tiny_llm_dir, tiny_embedder_dir
):
    """A real `extok-rag index --engine ray` updating an index, SIGKILLed with its Ray
    instance (its process group) after its first group's table commit: readers still see the
    last commit, the latest table version holds the killed run's whole documents, and the
    next run encodes only the rest and ends bitwise equal to an uninterrupted update."""
    idx, uninterrupted = tmp_path / "idx", tmp_path / "uninterrupted"
    build_index(corpus, idx, make_models(), settings)
    shutil.copytree(idx, uninterrupted)
    before = table_rows(idx)
    new = [f"new{n}.md" for n in range(6)]
    for n, name in enumerate(new):
        text = "".join(PROSE.format(i=100 + 10 * n + i, j=n * i) for i in range(4))
        (corpus / name).write_text(f"# New document {n}\n\n{text}")
    (corpus / "c.rst").unlink()

    args = ["index", str(corpus), "--index", str(idx), "--engine", "ray", "--workers", "1"]
    args += ["--llm", str(tiny_llm_dir), "--embedder", str(tiny_embedder_dir)]
    args += ["--chunk-tokens", "64", "--batch-tokens", str(settings.batch_tokens)]
    args += ["--device", "cpu"]
    proc = run_until_first_commit(args)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    deadline = time.monotonic() + 30  # the Ray daemons and actors die with their group
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not session_processes(proc.pid), "Ray processes outlived the kill"

    assert table_rows(idx) == before  # readers: the last commit, as it was
    assert (idx / "pending.json").exists()
    latest = ChunkTable.open(idx)
    kept = sorted(set(latest.doc_hashes()) & set(new))
    assert kept and kept == new[: len(kept)] and len(kept) < len(new)  # whole groups, in order
    assert "c.rst" not in latest.doc_hashes()  # the deletes were committed first
    for doc in kept:  # each kept document whole: positions 0..n-1
        positions = sorted(
            c.position for c in latest.fetch(latest.vectors()[0]) if c.doc_path == doc
        )
        assert positions == list(range(len(positions))) and positions

    resumed = build_index(
        corpus, idx, make_models(), settings, engine=engine(tiny_llm_dir, tiny_embedder_dir)
    )
    added = [f.rel for f in resumed.plan.added if f.rel in new]  # the bad files: never stored
    assert added == new[len(kept) :]  # only what the killed run did not keep
    assert not resumed.plan.deleted and not (idx / "pending.json").exists()
    build_index(corpus, uninterrupted, make_models(), settings)
    assert_same_index(uninterrupted, idx)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EXTOK_SLOW_TESTS"), reason="set EXTOK_SLOW_TESTS=1")
def test_worker_with_other_model_files_fails_in_one_line_and_commits_nothing(
    ray_instance, corpus, tmp_path, models, settings, other_llm_dir, tiny_embedder_dir
):
    """The driver plans with the tiny LLM; the actors load another one (a node whose model
    files differ): the worker's IncompatibleModelError comes back as itself."""
    idx = tmp_path / "idx"
    with pytest.raises(IncompatibleModelError, match=r"a Ray worker on .* another LLM") as err:
        build_index(corpus, idx, models, settings, engine=engine(other_llm_dir, tiny_embedder_dir))
    assert "\n" not in str(err.value)
    assert not (idx / "manifest.json").exists()


def cli_app() -> typer.Typer:
    from extok_rag.cli.index_cmd import index

    app = typer.Typer()
    app.command()(index)
    app.command("other")(lambda: None)  # two commands: `index` stays a subcommand
    return app


def test_bad_address_and_missing_ray_are_one_line_errors(corpus, tmp_path, monkeypatch):
    args = ["index", str(corpus), "--index", str(tmp_path / "idx"), "--engine", "ray"]
    refused = CliRunner().invoke(cli_app(), [*args, "--address", "127.0.0.1:1"])
    assert refused.exit_code == 1
    assert "error: no Ray cluster answers at 127.0.0.1:1" in refused.output
    assert "Traceback" not in refused.output

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    missing = CliRunner().invoke(cli_app(), args)
    assert missing.exit_code == 1
    assert "error: the Ray engine needs Ray: pip install 'extok-rag[ray]'" in missing.output
    with pytest.raises(IndexEngineError, match=r"extok-rag\[ray\]"):
        engine("llm", "emb").write(None)  # type: ignore[arg-type]


def test_ray_stays_optional_importing_the_indexer_imports_no_ray():
    import subprocess

    code = (
        "import sys, extok_rag.indexing, extok_rag.indexing.ray_engine, extok_rag.cli.app; "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_actor_pool_one_actor_per_gpu_else_cpu_actors_sharing_the_cpus():
    def pool(resources, workers=None, groups=100, device="auto"):
        models = WorkerModels()
        p = RayEngine(models, workers=workers, device=device).pool(resources, groups)
        return p.size, p.num_cpus, p.num_gpus, p.device, p.threads

    assert pool({"CPU": 64, "GPU": 8}) == (8, 1, 1, "cuda", 1)
    assert pool({"CPU": 64, "GPU": 8}, workers=3) == (3, 1, 1, "cuda", 1)
    assert pool({"CPU": 64, "GPU": 8}, groups=2) == (2, 1, 1, "cuda", 1)  # no idle loads
    assert pool({"CPU": 64, "GPU": 8}, device="cpu") == (16, 4, 0, "cpu", 4)
    assert pool({"CPU": 16}) == (4, 4, 0, "cpu", 4)
    assert pool({"CPU": 16}, workers=2) == (2, 8, 0, "cpu", 8)
    assert pool({"CPU": 2}, workers=2) == (2, 1, 0, "cpu", 1)
    assert pool({"CPU": 2}, workers=5) == (2, 1, 0, "cpu", 1)  # never more than the CPUs
    assert pool({"CPU": 16}, groups=1) == (1, 16, 0, "cpu", 16)
    with pytest.raises(IndexEngineError, match="no GPUs"):
        pool({"CPU": 16}, device="cuda")


def test_worker_errors_come_back_as_one_line_errors_of_their_own_kind():
    from ray.exceptions import RayError

    from extok_rag.errors import ModelNotFoundError
    from extok_rag.indexing.ray_session import worker_error

    traceback = (
        "\x1b[36mray::MapWorker(MapBatches(GroupEncoder)).__init__()\x1b[39m (pid=1, ip=10.0.0.3)\n"
        '  File "extok_rag/models/llm.py", line 55, in load\n'
        "extok_rag.errors.ModelNotFoundError: cannot load LLM from /models/x: no config.json\n"
    )
    error = worker_error(RayError(traceback))
    assert type(error) is ModelNotFoundError
    assert str(error) == "cannot load LLM from /models/x: no config.json"
    crashed = worker_error(RayError("ray::task()\nMemoryError: cannot allocate 8 GB\n"))
    assert type(crashed) is IndexEngineError
    assert str(crashed) == "a Ray worker failed: MemoryError: cannot allocate 8 GB"
    died = worker_error(RayError("The actor died unexpectedly before finishing this task.\n"))
    assert (
        str(died)
        == "the Ray engine failed: The actor died unexpectedly before finishing this task."
    )


def test_both_passes_in_process_give_the_local_engine_s_int8_rows(
    corpus, make_models, settings, tiny_llm_dir, tiny_embedder_dir
):
    """The Ray stages without Ray: pass 1 (chunk_rows) and pass 2 (GroupEncoder) through their
    Arrow forms, for an int8 table layout, equal the local engine's records bitwise."""
    from extok_rag.chunking import Chunker
    from extok_rag.indexes.table import TableLayout, chunk_schema
    from extok_rag.indexing.encoding import ChunkEncoder, encode_chunks
    from extok_rag.indexing.ray_tasks import (
        GroupEncoder,
        chunk_rows,
        chunked_from_arrow,
        file_row,
        group_to_arrow,
    )
    from extok_rag.indexing.reading import list_corpus
    from extok_rag.indexing.stages import chunk_files, commit_groups, group_chunks

    files = list_corpus(corpus)[0]
    models = make_models()
    chunker = Chunker(models.llm.tokenizer, settings.chunking)
    target = build_target(models, settings)
    layout = TableLayout(32, 64, "int8", chunk_schema(32, 64, "int8"))
    worker = WorkerModels(str(tiny_llm_dir), None, str(tiny_embedder_dir), dtype="float32")
    actor = GroupEncoder(worker, target, layout, settings.batch_tokens, "cpu", 1)
    encoder = ChunkEncoder(models.tokenizer, models.embedder, 2, settings.batch_tokens)

    pass1 = chunk_rows(pa_table([file_row(i, f) for i, f in enumerate(files)]), chunker)
    via_arrow = list(commit_groups(chunked_from_arrow(pass1, files), 512, lambda _: None))
    local = list(commit_groups(chunk_files(files, chunker), 512, lambda _: None))
    assert len(via_arrow) == len(local) == 3
    row_id = 7
    for remote_group, local_group in zip(via_arrow, local, strict=True):
        chunks, hashes = group_chunks(local_group)
        want = layout.to_arrow(
            encode_chunks(encoder, chunks, hashes), row_id + np.arange(len(chunks))
        )
        got = actor(group_to_arrow(remote_group, row_id))
        assert got.equals(want)
        row_id += len(chunks)


def pa_table(rows):
    import pyarrow as pa

    return pa.Table.from_pylist(rows)


def build_target(models, settings):
    from extok_rag.indexing import IndexTarget

    return IndexTarget(
        models.llm_identity,
        models.tokenizer_identity,
        models.embedder_identity,
        2,
        settings.chunking.to_dict(),
        "int8",
        models.tokenizer_downscale,
    )


def test_streamed_rows_are_cut_into_their_commit_groups_whatever_ray_s_blocks():
    """The driver commits each group on its own (a killed run keeps them), however Ray Data
    merged or split the actors' output blocks; rows that do not add up are one error."""
    import pyarrow as pa

    from extok_rag.indexing.ray_engine import per_group
    from extok_rag.indexing.stages import GroupSize

    sizes = [GroupSize(1, 0, 3, 0), GroupSize(2, 0, 2, 0), GroupSize(1, 0, 4, 0)]
    rows = pa.table({"row_id": pa.array(range(9), pa.int64())})
    for cuts in ([0, 9], [0, 2, 7, 9], [0, 3, 5, 9], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 0, 9]):
        blocks = [rows.slice(a, b - a) for a, b in itertools.pairwise(cuts)]
        groups = list(per_group(blocks, sizes))
        assert [g.column("row_id").to_pylist() for g, _ in groups] == [
            [0, 1, 2],
            [3, 4],
            [5, 6, 7, 8],
        ]
        assert [size for _, size in groups] == sizes
    for wrong in (rows.slice(0, 8), pa.concat_tables([rows, rows.slice(0, 1)])):
        with pytest.raises(IndexEngineError, match="other rows than the 9 chunks"):
            list(per_group([wrong], sizes))

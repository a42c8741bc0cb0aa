"""Self-healing vectors and clear errors for a damaged index: a missing, truncated or garbage
FAISS file is rebuilt from the chunk table (readers and writers); a manifest naming a table
version that is gone is refused with the fix."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from extok_rag.errors import IndexStoreError
from extok_rag.indexes import VectorIndex, WriterLock, read_manifest
from extok_rag.indexing import build_index, open_index


@pytest.fixture(params=["float16", "int8"])
def built(corpus, tmp_path, models, settings, request):
    """A committed index of the small corpus: (index dir, its vector file, queries, answers),
    with float16 states (float32 vectors) or int8 states (float16 vectors, fp16 FAISS file)."""
    idx = tmp_path / "idx"
    small = replace(settings, exclude=("big.md",), state_encoding=request.param)
    build_index(corpus, idx, models, small)
    snap = open_index(idx)
    queries = snap.table.vectors()[1][:5]
    return idx, idx / snap.manifest.vector_file, queries, snap.vectors.search(queries, 3)


def damage(path, how: str) -> None:
    content = path.read_bytes()
    if how == "missing":
        path.unlink()
    else:
        path.write_bytes(content[: len(content) // 2] if how == "truncated" else b"garbage")


@pytest.mark.parametrize("how", ["missing", "truncated", "garbage"])
def test_reader_rebuilds_a_damaged_vector_file_from_the_table(built, caplog, how):
    idx, path, queries, answers = built
    damage(path, how)
    with caplog.at_level(logging.WARNING, logger="extok_rag.indexing"):
        snap = open_index(idx)
    (notice,) = [r.getMessage() for r in caplog.records]
    assert notice.startswith("notice: ") and "\n" not in notice and "--rebuild" not in notice
    assert "rebuilt it from the chunk table's" in notice and notice.endswith("and saved it")
    for got, want in zip(snap.vectors.search(queries, 3), answers, strict=True):
        np.testing.assert_array_equal(got, want)
    healed = VectorIndex.load(path)
    assert len(healed) == snap.manifest.counts.chunks  # saved back, whole
    assert healed.precision == ("float16" if snap.table.encoding == "int8" else "float32")


def test_reader_heals_in_memory_while_a_writer_holds_the_index(built, caplog):
    idx, path, queries, answers = built
    damage(path, "truncated")
    with WriterLock(idx), caplog.at_level(logging.WARNING, logger="extok_rag.indexing"):
        snap = open_index(idx)
    assert "in memory: a writer holds the index" in caplog.records[0].getMessage()
    np.testing.assert_array_equal(snap.vectors.search(queries, 3)[0], answers[0])
    with pytest.raises(IndexStoreError, match="is corrupt"):
        VectorIndex.load(path)  # left for the writer


def test_index_run_rebuilds_a_damaged_vector_file(built, corpus, make_models, settings):
    idx, path, queries, answers = built
    models = make_models()
    damage(path, "garbage")
    warnings = []

    class Collect:
        def warn(self, message):
            warnings.append(message)

        def status(self, m): ...
        def start(self, plan): ...
        def advance(self, *a): ...

    settings = replace(settings, exclude=("big.md",), state_encoding=None)  # the index's own
    build_index(corpus, idx, models, settings, progress=Collect())
    assert any("is corrupt" in w and w.endswith("rebuilding it") for w in warnings), warnings
    assert models.calls == {"tokenizer": 0, "embedder": 0}  # no model work for it
    snap = open_index(idx)
    assert (idx / snap.manifest.vector_file).is_file()
    np.testing.assert_array_equal(snap.vectors.search(queries, 3)[0], answers[0])


def drop_table_version(idx, version: int) -> None:
    """Delete one LanceDB version's manifest file, as a hand clean-up or another tool might."""
    (idx / "lance" / "chunks.lance" / "_versions" / f"{2**64 - 1 - version}.manifest").unlink()


def test_manifest_naming_a_missing_table_version_is_refused_with_the_fix(
    built, corpus, models, settings
):
    idx = built[0]
    version = read_manifest(idx).table_version
    drop_table_version(idx, version)
    with pytest.raises(IndexStoreError) as info:
        open_index(idx)
    message = str(info.value)
    assert f"chunk-table version {version}, which is missing" in message
    assert f"extok-rag index CORPUS --index {idx} --rebuild" in message
    assert "\n" not in message
    settings = replace(settings, exclude=("big.md",), state_encoding=None)  # the index's own
    with pytest.raises(IndexStoreError, match="which is missing"):
        build_index(corpus, idx, models, settings)
    build_index(corpus, idx, models, settings, rebuild=True)  # the named fix works
    assert open_index(idx).table.count() == read_manifest(idx).counts.chunks


def test_info_prints_one_notice_line_and_works(built):
    from extok_rag.cli.index_cmd import info

    idx, path, _, _ = built
    damage(path, "truncated")
    app = typer.Typer()
    app.command()(info)
    app.command("noop")(lambda: None)  # two commands: `info` stays a subcommand
    result = CliRunner().invoke(app, ["info", str(idx), "--json"])
    assert result.exit_code == 0, result.output
    notices = [line for line in result.stderr.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "rebuilt it from the chunk table's" in notices[0]

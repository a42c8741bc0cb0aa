"""int8 states through index runs: recorded in the manifest, within the quantisation bound of
the float16 build, refused when another encoding is asked, shown by `info --json`; float16
indexes keep format version 1 (readable by releases before encodings)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from extok_rag.errors import IncompatibleModelError
from extok_rag.indexes import read_manifest
from extok_rag.indexes.vectors import VectorIndex
from extok_rag.indexing import build_index

from .test_indexer import rows


@pytest.fixture
def small(settings):
    return replace(settings, exclude=("big.md",))


def test_int8_index_is_within_half_a_step_of_the_float16_one(corpus, tmp_path, models, small):
    build_index(corpus, tmp_path / "f16", models, small)
    build_index(corpus, tmp_path / "i8", models, replace(small, state_encoding="int8"))
    f16, i8 = read_manifest(tmp_path / "f16"), read_manifest(tmp_path / "i8")
    assert (f16.state_encoding, f16.format_version) == ("float16", 1)
    assert (i8.state_encoding, i8.format_version) == ("int8", 2)
    # the FAISS file keeps vectors at the table's precision: float16 for int8 states
    faiss_files = {k: tmp_path / k / m.vector_file for k, m in (("f16", f16), ("i8", i8))}
    assert VectorIndex.load(faiss_files["f16"]).precision == "float32"
    assert VectorIndex.load(faiss_files["i8"]).precision == "float16"
    want, got = rows(tmp_path / "f16"), rows(tmp_path / "i8")
    assert want.keys() == got.keys()
    for key, chunk in got.items():
        exact = want[key].states.astype(np.float32)
        bound = np.abs(exact).max(axis=1, keepdims=True) / 254 * (1 + 2**-10)  # float16 scale
        assert chunk.states.shape == exact.shape
        assert (np.abs(chunk.states - exact) <= bound * (1 + 1e-5) + 1e-6).all(), key
        assert chunk.text == want[key].text
        # int8 indexes keep retrieval vectors at float16 (unit vectors; see indexes/table.py)
        assert np.array_equal(chunk.vector, want[key].vector.astype(np.float16).astype(np.float32))


def test_encoding_is_kept_refused_when_changed_and_rebuilt(corpus, tmp_path, models, small):
    idx = tmp_path / "idx"
    build_index(corpus, idx, models, replace(small, state_encoding="int8"))
    unset = replace(small, state_encoding=None)  # the index's own
    assert build_index(corpus, idx, models, unset).up_to_date
    with pytest.raises(IncompatibleModelError, match="int8 states in the index vs float16"):
        build_index(corpus, idx, models, replace(small, state_encoding="float16"))
    build_index(corpus, idx, models, replace(small, state_encoding="float16"), rebuild=True)
    manifest = read_manifest(idx)
    assert (manifest.state_encoding, manifest.format_version) == ("float16", 1)
    assert all(c.states.dtype == np.float16 for c in rows(idx).values())


def test_info_json_gives_the_encoding_and_bytes_per_token(corpus, tmp_path, models, small):
    from extok_rag.cli.index_cmd import info

    app = typer.Typer()
    app.command()(info)
    app.command("noop")(lambda: None)
    shown = {}
    for encoding in ("float16", "int8"):
        idx = tmp_path / encoding
        build_index(corpus, idx, models, replace(small, state_encoding=encoding))
        result = CliRunner().invoke(app, ["info", str(idx), "--json"])
        assert result.exit_code == 0, result.output
        shown[encoding] = json.loads(result.stdout)
        assert shown[encoding]["state_encoding"] == encoding
    d, stride = models.state_dim, 2
    f16, i8 = shown["float16"], shown["int8"]
    # states alone: bytes per state / stride, plus the odd chunk tail's extra state
    assert 2 * d / stride <= f16["state_bytes_per_token"] <= 2 * d / stride * 1.1
    assert (d + 2) / stride <= i8["state_bytes_per_token"] <= (d + 2) / stride * 1.1
    assert i8["bytes_per_token"] < f16["bytes_per_token"]
    assert i8["bytes_per_token"] > i8["state_bytes_per_token"]  # text, vectors, FAISS too


def test_index_command_takes_states_and_refuses_unknown_ones(corpus, tmp_path):
    from extok_rag.cli.index_cmd import index

    app = typer.Typer()
    app.command()(index)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["index", str(corpus), "--states", "int4"])
    assert result.exit_code == 2 and "--states must be 'float16' or 'int8'" in result.output

"""`ask --scorer learned` over a real tiny index: the learned span scorer (the shipped
checkpoint, fed the tiny embedder's cosines) picks the spans `spans` mode reads raw."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from extok_rag.cli import app
from extok_rag.indexing import build_index


@pytest.fixture
def index_dir(corpus, tmp_path, models, settings):
    build_index(corpus, tmp_path / "idx", models, settings)
    return tmp_path / "idx"


@pytest.mark.parametrize("mode", ["spans", "expand"])
def test_ask_with_the_learned_scorer(index_dir, tiny_llm_dir, tiny_embedder_dir, monkeypatch, mode):
    import extok_rag.models.embedder as embedder_module

    real_load = embedder_module.Embedder.load
    monkeypatch.setattr(
        embedder_module.Embedder,
        "load",
        classmethod(lambda cls, path=None, rt=None: real_load(tiny_embedder_dir, rt)),
    )
    base = ["ask", "--index", str(index_dir), "--llm", str(tiny_llm_dir), "--dtype", "float32"]
    base += ["--max-new-tokens", "2", "--top-n", "2", "--json", "--scorer", "learned"]
    result = CliRunner().invoke(
        app, [*base, "Section 3 numbers?", "--mode", mode, "--budget", "220"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert answer["mode"] == mode and answer["positions"] <= 220
    assert answer["expanded"] and all(s["text"] for s in answer["expanded"])

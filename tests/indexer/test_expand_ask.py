"""`ask --mode expand` and the query engine's expand mode over a real tiny index: the prompt
keeps to the budget, and `--json` / the engine's metadata say which spans were read raw."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from extok_rag.cli import app
from extok_rag.config import AskConfig, GenerationConfig, RuntimeConfig
from extok_rag.indexing import build_index, open_index
from extok_rag.integrations.llama_index import ExtokQueryEngine, ExtokRetriever
from extok_rag.models.embedder import Embedder


@pytest.fixture
def index_dir(corpus, tmp_path, models, settings):
    build_index(corpus, tmp_path / "idx", models, settings)
    return tmp_path / "idx"


def test_cli_expand_reports_the_spans_read_raw(
    index_dir, tiny_llm_dir, tiny_embedder_dir, monkeypatch
):
    import extok_rag.models.embedder as embedder_module

    real_load = embedder_module.Embedder.load
    monkeypatch.setattr(
        embedder_module.Embedder,
        "load",
        classmethod(lambda cls, path=None, rt=None: real_load(tiny_embedder_dir, rt)),
    )
    base = ["ask", "--index", str(index_dir), "--llm", str(tiny_llm_dir), "--dtype", "float32"]
    base += ["--max-new-tokens", "2", "--top-n", "2", "--json"]
    result = CliRunner().invoke(
        app, [*base, "Section 3 numbers?", "--mode", "expand", "--budget", "220"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert answer["mode"] == "expand" and answer["positions"] <= 220
    assert answer["expanded"] and all(s["text"] and s["doc_path"] for s in answer["expanded"])
    paths = {s["doc_path"] for s in answer["sources"]}
    assert {s["doc_path"] for s in answer["expanded"]} <= paths
    bad = CliRunner().invoke(app, [*base, "q", "--mode", "expand", "--budget", "ten"])
    assert bad.exit_code == 1 and "--budget" in bad.output and "Traceback" not in bad.output
    small = CliRunner().invoke(app, [*base, "q", "--mode", "expand", "--budget", "5"])
    assert small.exit_code == 1 and "raise --budget" in " ".join(small.output.split())


def test_query_engine_expand_mode(index_dir, tiny_llm, tiny_embedder_dir):
    snapshot = open_index(index_dir)
    embedder = Embedder.load(tiny_embedder_dir, RuntimeConfig(device="cpu", dtype="float32"))
    engine = ExtokQueryEngine(
        llm=tiny_llm,
        retriever=ExtokRetriever(snapshot, embedder, similarity_top_k=2),
        snapshot=snapshot,
        ask_config=AskConfig(mode="expand", top_n=2, budget=220, scorer="lexical"),
        generation=GenerationConfig(max_new_tokens=2),
    )
    response = engine.query("What numbers does section 2 give?")
    assert response.metadata["mode"] == "expand" and response.metadata["positions"] <= 220
    assert response.metadata["expanded"] and engine.embedder is embedder

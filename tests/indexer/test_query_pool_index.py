"""An index of a tokenizer that pools queries stores every position's state before the
held-back layer (stride 1, format 4); readers pool them with that layer, loaded from the
checkpoint the manifest names."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from extok_rag.ask.build import build_prompt
from extok_rag.ask.pooling import HeldBackPooler, snapshot_pooling
from extok_rag.ask.retrieval import Retrieved, chunk_embeddings, retrieve
from extok_rag.chunking import Chunker
from extok_rag.config import AskConfig, RuntimeConfig, TokenizerConfig
from extok_rag.errors import IncompatibleModelError
from extok_rag.indexing import IndexModels, build_index, open_index
from extok_rag.indexing.reading import list_corpus, read_text
from extok_rag.models.embedder import Embedder
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.mixed_input import EmbeddingSegment


@pytest.fixture
def pool_checkpoint(tiny_llm, tmp_path):
    torch.manual_seed(0)
    cfg = TokenizerConfig(num_layers=2, downscale="query_pool")
    tokenizer = ExtensibleTokenizer.from_llm(tiny_llm, cfg)
    with torch.no_grad():  # a trained-looking held-back layer: not the LLM's own copy
        tokenizer.encoder.layers[1].mlp.down_proj.weight.normal_(0, 0.05)
    tokenizer.save_pretrained(tmp_path / "pool-ckpt")
    return tmp_path / "pool-ckpt"


@pytest.fixture
def pool_index(corpus, tmp_path, tiny_llm, tiny_embedder_dir, pool_checkpoint, settings):
    models = IndexModels(tiny_llm, pool_checkpoint, tiny_embedder_dir)
    build_index(corpus, tmp_path / "idx", models, replace(settings, stride=None))
    return open_index(tmp_path / "idx"), models


@pytest.fixture
def embedder(tiny_embedder_dir):
    return Embedder.load(tiny_embedder_dir, RuntimeConfig(device="cpu", dtype="float32"))


def test_the_manifest_records_stride_1_and_a_format_old_releases_refuse(pool_index):
    snapshot, _ = pool_index
    assert snapshot.manifest.downscale == "query_pool"
    assert snapshot.manifest.stride == 1
    assert snapshot.manifest.format_version == 4


def test_rows_hold_the_states_before_the_held_back_layer_and_k_reads_pooled_queries(
    pool_index, corpus, settings
):
    snapshot, models = pool_index
    tokenizer = models.tokenizer
    (file,) = [f for f in list_corpus(corpus)[0] if f.rel == "a.md"]
    chunks = Chunker(models.llm.tokenizer, settings.chunking).split(file.rel, read_text(file))
    stored = {r.chunk_id: r for r in snapshot.table.fetch(snapshot.table.vectors()[0])}
    pooler = snapshot_pooling(snapshot, models.llm)
    assert isinstance(pooler, HeldBackPooler)
    for chunk in chunks:
        with torch.inference_mode():
            (states,) = tokenizer.encode([torch.from_numpy(chunk.token_ids)])  # (L, d)
            want = tokenizer.downscale(states, 4)  # (ceil(L/4), d)
        row = stored[chunk.chunk_id]
        assert row.states.shape == (chunk.n_tokens, states.shape[-1])
        assert row.states.tobytes() == states.to(torch.float16).numpy().tobytes()
        read = Retrieved(row.row_id, 1.0, row.doc_path, row.text, row.n_tokens, row.states, pooler)
        torch.testing.assert_close(chunk_embeddings(read, 4, 1), want, atol=5e-3, rtol=5e-3)


def test_ask_reads_pooled_queries_in_compressed_and_expand(pool_index, embedder, tiny_llm):
    snapshot, models = pool_index
    chunks = retrieve(snapshot, embedder, "Alpha", 2, llm=tiny_llm)
    assert all(isinstance(c.pooling, HeldBackPooler) for c in chunks)
    prompt = build_prompt(
        tiny_llm, "Alpha?", chunks, AskConfig(k=4, top_n=2, mode="compressed"), 1, 4
    )
    embeds = [seg.embeds for seg in prompt.row if isinstance(seg, EmbeddingSegment)]
    for chunk, emb in zip(chunks, embeds, strict=True):
        stored = torch.from_numpy(chunk.states.astype("float32"))
        with torch.inference_mode():
            assert torch.equal(emb, models.tokenizer.downscale(stored, 4))
    cfg = AskConfig(k=4, top_n=2, mode="expand", budget=70)
    prompt = build_prompt(tiny_llm, "Alpha?", chunks, cfg, 1, 4, embedder)
    assert prompt.k == 4 and any(isinstance(s, EmbeddingSegment) for s in prompt.row)


def test_a_ranking_retriever_needs_no_llm(pool_index, embedder):
    snapshot, _ = pool_index
    assert {c.pooling for c in retrieve(snapshot, embedder, "Alpha", 2)} == {"query_pool"}


def test_another_stride_is_refused_in_one_line_before_any_data_is_written(
    corpus, tmp_path, tiny_llm, tiny_embedder_dir, pool_checkpoint, settings
):
    models = IndexModels(tiny_llm, pool_checkpoint, tiny_embedder_dir)
    with pytest.raises(IncompatibleModelError, match="stored at stride 1") as err:
        build_index(corpus, tmp_path / "idx2", models, replace(settings, stride=2))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "idx2" / "manifest.json").exists()


def test_the_command_line_says_so_in_one_line(
    corpus, tmp_path, tiny_llm_dir, tiny_embedder_dir, pool_checkpoint
):
    from typer.testing import CliRunner

    from extok_rag.cli import app

    args = [str(corpus), "--index", str(tmp_path / "idx3"), "--llm", str(tiny_llm_dir)]
    args += ["--embedder", str(tiny_embedder_dir), "--tokenizer", str(pool_checkpoint)]
    result = CliRunner().invoke(app, ["index", *args, "--stride", "2", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "stored at stride 1" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "idx3" / "manifest.json").exists()


@pytest.mark.parametrize("change", ["moved", "retrained"])
def test_a_missing_or_changed_tokenizer_is_a_one_line_error(
    pool_index, embedder, tiny_llm, pool_checkpoint, change, monkeypatch
):
    from extok_rag.ask import pooling

    monkeypatch.setattr(pooling, "_LOADED", {})
    snapshot, _ = pool_index
    if change == "moved":
        pool_checkpoint.rename(pool_checkpoint.with_name("elsewhere"))
        match = "not there"
    else:
        tokenizer = ExtensibleTokenizer.from_pretrained(pool_checkpoint, tiny_llm)
        with torch.no_grad():
            tokenizer.encoder.layers[1].mlp.down_proj.weight.add_(1.0)
        tokenizer.save_pretrained(pool_checkpoint)
        match = "changed since"
    with pytest.raises(IncompatibleModelError, match=match) as err:
        retrieve(snapshot, embedder, "Alpha", 2, llm=tiny_llm)
    assert "\n" not in str(err.value) and "re-index" in str(err.value)

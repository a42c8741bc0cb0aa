"""An index built with a mean-pooling tokenizer stores window means and is read by them."""

from __future__ import annotations

import json

import pytest
import torch

from extok_rag.ask.build import build_prompt
from extok_rag.ask.retrieval import Retrieved, chunk_embeddings, retrieve
from extok_rag.chunking import Chunker
from extok_rag.config import AskConfig, RuntimeConfig, TokenizerConfig
from extok_rag.errors import IndexStoreError
from extok_rag.indexing import IndexModels, build_index, open_index
from extok_rag.indexing.reading import list_corpus, read_text
from extok_rag.models.embedder import Embedder
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer, downscale
from extok_rag.models.mixed_input import EmbeddingSegment


@pytest.fixture
def mean_checkpoint(tiny_llm, tmp_path):
    tokenizer = ExtensibleTokenizer.from_llm(
        tiny_llm, TokenizerConfig(num_layers=1, downscale="mean")
    )
    tokenizer.save_pretrained(tmp_path / "mean-ckpt")
    return tmp_path / "mean-ckpt"


@pytest.fixture
def mean_index(corpus, tmp_path, tiny_llm, tiny_embedder_dir, mean_checkpoint, settings):
    models = IndexModels(tiny_llm, mean_checkpoint, tiny_embedder_dir)
    build_index(corpus, tmp_path / "idx", models, settings)
    return open_index(tmp_path / "idx"), models


def test_the_manifest_records_mean_and_a_format_old_releases_refuse(mean_index):
    snapshot, _ = mean_index
    assert snapshot.manifest.downscale == "mean"
    assert snapshot.manifest.format_version == 3


def test_stored_rows_are_pair_means_and_k_reads_window_means(mean_index, corpus, settings):
    snapshot, models = mean_index
    (file,) = [f for f in list_corpus(corpus)[0] if f.rel == "a.md"]
    chunks = Chunker(models.llm.tokenizer, settings.chunking).split(file.rel, read_text(file))
    stored = {r.chunk_id: r for r in snapshot.table.fetch(snapshot.table.vectors()[0])}
    even = 0
    for chunk in chunks:
        with torch.inference_mode():
            (states,) = models.tokenizer.encode([torch.from_numpy(chunk.token_ids)])  # (L, d)
        row = stored[chunk.chunk_id]
        want = downscale(states, 2, "mean").to(torch.float16).numpy()
        assert row.states.tobytes() == want.tobytes()
        if chunk.n_tokens % 2 == 0:  # full pairs: their means are exactly the 4-window means
            even += 1
            read = Retrieved(
                row.row_id, 1.0, row.doc_path, row.text, row.n_tokens, row.states, "mean"
            )
            got = chunk_embeddings(read, 4, 2)
            torch.testing.assert_close(got, downscale(states, 4, "mean"), atol=2e-3, rtol=2e-3)
            assert not torch.allclose(got, downscale(states, 4), atol=1e-2)
    assert even


def test_ask_reads_mean_pooled_chunks(mean_index, tiny_embedder_dir, tiny_llm):
    snapshot, _ = mean_index
    embedder = Embedder.load(tiny_embedder_dir, RuntimeConfig(device="cpu", dtype="float32"))
    chunks = retrieve(snapshot, embedder, "Alpha", 2)
    prompt = build_prompt(
        tiny_llm, "Alpha?", chunks, AskConfig(k=4, top_n=2, mode="compressed"), 2, 4
    )
    embeds = [seg.embeds for seg in prompt.row if isinstance(seg, EmbeddingSegment)]
    for chunk, emb in zip(chunks, embeds, strict=True):
        stored = torch.from_numpy(chunk.states.astype("float32"))
        assert torch.equal(emb, downscale(stored, 2, "mean"))


def test_an_unknown_down_scale_in_the_manifest_is_a_clear_error(mean_index, tmp_path):
    path = tmp_path / "idx" / "manifest.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "downscale": "max"}))
    with pytest.raises(IndexStoreError, match="malformed"):
        open_index(tmp_path / "idx")
    del data["downscale"]  # an index from before the key: strided
    path.write_text(json.dumps({**data, "format_version": 1}))
    assert open_index(tmp_path / "idx").manifest.downscale == "strided"


def test_a_merge_tokenizer_is_refused_in_one_line_before_any_data_is_written(
    corpus, tmp_path, tiny_llm, tiny_embedder_dir, settings
):
    from extok_rag.errors import IncompatibleModelError

    method = "merge"  # its output depends on k; query pooling's stored form does not
    cfg = TokenizerConfig(num_layers=1, downscale=method)
    ExtensibleTokenizer.from_llm(tiny_llm, cfg).save_pretrained(tmp_path / "ckpt", full=False)
    models = IndexModels(tiny_llm, tmp_path / "ckpt", tiny_embedder_dir)
    with pytest.raises(IncompatibleModelError, match=f"{method} down-scaling cannot") as err:
        build_index(corpus, tmp_path / "idx", models, settings)
    assert "\n" not in str(err.value)
    assert [p.name for p in (tmp_path / "idx").iterdir()] == ["writer.lock"]  # no data, no manifest

"""The ask path over a tiny index: retrieval, prompts at k, modes, and its errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from extok_rag.ask.answer import ask
from extok_rag.ask.build import build_prompt
from extok_rag.ask.retrieval import check_llm, chunk_embeddings, retrieve
from extok_rag.cli import app
from extok_rag.config import AskConfig, GenerationConfig, RuntimeConfig
from extok_rag.errors import ExtokError, IncompatibleModelError, InputTooLongError
from extok_rag.indexes import ChunkTable, read_manifest, write_manifest
from extok_rag.indexing import build_index, open_index
from extok_rag.models.embedder import Embedder
from extok_rag.models.extensible_tokenizer import downscale
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import EmbeddingSegment

GEN = GenerationConfig(max_new_tokens=4)


@pytest.fixture
def built(corpus, tmp_path, models, settings):
    build_index(corpus, tmp_path / "idx", models, settings)
    return open_index(tmp_path / "idx"), models


@pytest.fixture
def embedder(tiny_embedder_dir):
    return Embedder.load(tiny_embedder_dir, RuntimeConfig(device="cpu", dtype="float32"))


def test_retrieve_returns_best_first_with_their_rows(built, embedder):
    snapshot, _ = built
    chunks = retrieve(snapshot, embedder, "Section 3 numbers", 3)
    assert len(chunks) == 3
    assert [c.score for c in chunks] == sorted((c.score for c in chunks), reverse=True)
    stored = snapshot.table.fetch([chunks[0].row_id])[0]
    assert chunks[0].text == stored.text and chunks[0].doc_path == stored.doc_path


def test_compressed_prompt_holds_each_chunk_downscaled_to_k(built, embedder, tiny_llm):
    snapshot, _ = built
    stride = snapshot.manifest.stride
    chunks = retrieve(snapshot, embedder, "Alpha", 2)
    prompt = build_prompt(
        tiny_llm, "Alpha?", chunks, AskConfig(k=4, top_n=2, mode="compressed"), stride, 4
    )
    embeds = [seg.embeds for seg in prompt.row if isinstance(seg, EmbeddingSegment)]
    assert len(embeds) == 2 and prompt.k == 4
    for chunk, emb in zip(chunks, embeds, strict=True):
        assert emb.shape[0] == -(-chunk.n_tokens // 4)
        stored = torch.from_numpy(chunk.states.astype("float32"))
        assert torch.equal(emb, downscale(stored, 4 // stride))


def test_modes_change_what_the_llm_reads(built, embedder, tiny_llm):
    snapshot, _ = built
    positions = {}
    for mode in ("compressed", "hybrid", "raw", "none"):
        cfg = AskConfig(mode=mode, k=4 if mode in ("compressed", "hybrid") else None, top_n=3)
        chunks, prompt, answer = ask(tiny_llm, embedder, snapshot, "Section 2?", cfg, GEN)
        assert isinstance("".join(answer), str)
        kinds = [type(s).__name__ for s in prompt.row]
        assert ("EmbeddingSegment" in kinds) == (mode in ("compressed", "hybrid"))
        assert (len(chunks) == 0) == (mode == "none")
        positions[mode] = prompt.positions
    assert positions["none"] < positions["compressed"] < positions["hybrid"] < positions["raw"]


def test_source_lines_head_each_chunk_with_its_file(built, embedder, tiny_llm):
    snapshot, _ = built
    chunks = retrieve(snapshot, embedder, "Alpha", 2)
    cfg = AskConfig(k=4, top_n=2, mode="compressed", source_lines=True)
    prompt = build_prompt(tiny_llm, "Alpha?", chunks, cfg, snapshot.manifest.stride, 4)
    text = "".join(tiny_llm.tokenizer.decode(s.ids) for s in prompt.row if hasattr(s, "ids"))
    for chunk in chunks:
        assert f"[{chunk.doc_path}]" in text


def test_auto_k_is_the_smallest_that_fits(built, embedder, tiny_llm):
    snapshot, _ = built
    chunks = retrieve(snapshot, embedder, "Section", 4)
    stride = snapshot.manifest.stride
    roomy = build_prompt(
        tiny_llm, "q", chunks, AskConfig(top_n=4, mode="compressed"), stride, reserve=4
    )
    assert roomy.k == 2
    tight = build_prompt(
        tiny_llm,
        "q",
        chunks,
        AskConfig(top_n=4, mode="compressed"),
        stride,
        reserve=tiny_llm.max_positions - roomy.positions + 40,
    )
    assert tight.k > 2 and tight.positions <= roomy.positions - 40


def test_errors_are_clear(built, embedder, tiny_llm, other_llm_dir):
    snapshot, _ = built
    chunk = retrieve(snapshot, embedder, "Alpha", 1)[0]
    with pytest.raises(ExtokError, match="not a multiple of the index's stride"):
        chunk_embeddings(chunk, 3, snapshot.manifest.stride)
    with pytest.raises(InputTooLongError, match="LLM window"):
        build_prompt(
            tiny_llm, "why? " * 200, [chunk], AskConfig(k=2, mode="compressed"), 2, reserve=4
        )
    other = FrozenLLM.load(other_llm_dir, RuntimeConfig(device="cpu", dtype="float32"))
    with pytest.raises(IncompatibleModelError, match="index was built for LLM"):
        check_llm(snapshot, other)


def test_an_empty_index_says_so(tmp_path, models, settings, embedder, tiny_llm):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "empty.txt").write_text("")
    build_index(tmp_path / "corpus", tmp_path / "idx", models, settings)
    with pytest.raises(ExtokError, match="index is empty"):
        ask(tiny_llm, embedder, open_index(tmp_path / "idx"), "q", AskConfig(), GEN)


def test_cli_ask_end_to_end(built, tmp_path, tiny_llm_dir, tiny_embedder_dir, monkeypatch):
    import extok_rag.models.embedder as embedder_module

    real_load = embedder_module.Embedder.load
    monkeypatch.setattr(
        embedder_module.Embedder,
        "load",
        classmethod(lambda cls, path=None, rt=None: real_load(tiny_embedder_dir, rt)),
    )
    runner = CliRunner()
    base = [
        "ask",
        "--index",
        str(tmp_path / "idx"),
        "--llm",
        str(tiny_llm_dir),
        "--dtype",
        "float32",
        "--max-new-tokens",
        "3",
    ]
    args = ["Section 1?", "--json", "--mode", "compressed", "--k", "4", "--source-lines"]
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code == 0, result.output
    assert '"sources"' in result.output and '"k": 4' in result.output
    result = runner.invoke(app, [*base, "q", "--mode", "compressed", "--k", "3"])
    assert result.exit_code == 1 and "not a multiple" in result.output
    result = runner.invoke(app, [*base, "q", "--k", "4"])  # the default mode reads no k
    assert result.exit_code == 1 and "mode auto reads no compressed chunk" in result.output
    result = runner.invoke(app, [*base, "Section 1?", "--json"])
    assert result.exit_code == 0 and '"mode": "raw"' in result.output
    result = runner.invoke(app, ["ask", "q", "--index", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_interactive_loop_answers_until_an_empty_line(
    built, tmp_path, tiny_llm_dir, tiny_embedder_dir, monkeypatch
):
    import extok_rag.models.embedder as embedder_module

    real_load = embedder_module.Embedder.load
    monkeypatch.setattr(
        embedder_module.Embedder,
        "load",
        classmethod(lambda cls, path=None, rt=None: real_load(tiny_embedder_dir, rt)),
    )
    result = CliRunner().invoke(
        app,
        [
            "ask",
            "--index",
            str(tmp_path / "idx"),
            "--llm",
            str(tiny_llm_dir),
            "--json",
            "--dtype",
            "float32",
            "--max-new-tokens",
            "2",
        ],
        input="first?\nsecond?\n\n",
    )
    assert result.exit_code == 0, result.output
    assert result.output.count('"question"') == 2


def test_a_k_the_mode_would_ignore_is_refused_in_one_line(built, embedder, tiny_llm):
    snapshot, _ = built
    for mode in ("raw", "spans", "truncated", "none", "auto"):
        with pytest.raises(ExtokError, match=f"mode {mode} reads no compressed chunk"):
            ask(tiny_llm, embedder, snapshot, "q", AskConfig(mode=mode, k=4), GEN)
    with pytest.raises(ExtokError, match="unknown mode 'squash'"):
        ask(tiny_llm, embedder, snapshot, "q", AskConfig(mode="squash"), GEN)


def test_auto_reads_raw_when_it_fits_and_the_best_sentences_when_not(built, embedder, tiny_llm):
    """The default mode: raw top-n's very prompt when it fits the budget, else spans'."""
    snapshot, _ = built
    chunks = retrieve(snapshot, embedder, "Section 2?", 3)
    stride = snapshot.manifest.stride

    def prompt(mode, budget=None):
        cfg = AskConfig(mode=mode, top_n=3, budget=budget)
        return build_prompt(tiny_llm, "Section 2?", chunks, cfg, stride, 4, embedder)

    def ids(p):
        return [s.ids.tolist() for s in p.row]  # no embeddings in either mode

    raw, auto = prompt("raw"), prompt("auto")
    assert (auto.mode, ids(auto), auto.positions) == ("raw", ids(raw), raw.positions)
    small = raw.positions // 2
    spans, auto = prompt("spans", small), prompt("auto", small)
    assert (auto.mode, ids(auto), auto.positions) == ("spans", ids(spans), spans.positions)
    assert auto.positions <= small and auto.expanded


def test_replace_keeps_config_frozen():
    assert replace(AskConfig(), k=8).k == 8


def test_the_python_api_opens_an_index_and_asks_it(built, embedder, tiny_llm, tmp_path):
    import extok_rag

    index = extok_rag.open(tmp_path / "idx", llm=tiny_llm, embedder=embedder, max_new_tokens=4)
    answer = index.ask("Section 2?")
    snapshot, _ = built
    cfg = AskConfig()
    _, prompt, pieces = ask(tiny_llm, embedder, snapshot, "Section 2?", cfg, GEN)
    assert answer.text == "".join(pieces).strip() and str(answer) == answer.text
    assert (answer.mode, answer.positions, answer.k) == ("raw", prompt.positions, None)
    assert len(answer.sources) == cfg.top_n and answer.finish_reason == "length"
    streamed = "".join(index.stream("Section 2?"))
    assert streamed.strip() == answer.text
    spans = index.ask("Section 2?", mode="spans", budget=prompt.positions // 2)
    assert spans.mode == "spans" and spans.positions <= prompt.positions // 2 and spans.expanded
    with pytest.raises(TypeError, match="unknown option"):
        index.ask("q", top_k=3)


def test_an_index_made_with_another_embedder_is_refused_in_one_line(built, tiny_llm):
    from extok_rag.errors import IncompatibleModelError

    snapshot, _ = built
    other = Embedder.load(None, RuntimeConfig(device="cpu", dtype="float32"))  # MiniLM
    with pytest.raises(IncompatibleModelError, match="built with retrieval embedder"):
        ask(tiny_llm, other, snapshot, "q", AskConfig(), GEN)


def test_text_and_hybrid_retrieval_find_the_chunk_that_holds_the_words(built, embedder):
    """BM25 over LanceDB's full-text index finds the only chunk with 'reStructuredText';
    hybrid fuses it with the (tiny, random) vectors' ranking by reciprocal rank."""
    snapshot, _ = built
    assert snapshot.table.has_text_index()
    question = "Which document is reStructuredText?"
    text = retrieve(snapshot, embedder, question, 3, "text")
    assert text[0].doc_path == "c.rst" and len(text) == 1  # one chunk holds the word
    vector = retrieve(snapshot, embedder, question, 3, "vector")
    hybrid = retrieve(snapshot, embedder, question, 3, "hybrid")
    assert len(hybrid) == 3 and "c.rst" in {c.doc_path for c in hybrid}
    assert {c.row_id for c in hybrid} <= {c.row_id for c in vector} | {text[0].row_id}
    assert [c.score for c in hybrid] == sorted((c.score for c in hybrid), reverse=True)
    with pytest.raises(ExtokError, match="unknown retrieval 'bm25'"):
        retrieve(snapshot, embedder, question, 3, "bm25")


def test_two_hop_keeps_hybrid_but_its_last_place(built, embedder):
    """Two-hop: hybrid's first n - 1 chunks, then a chunk of a document they don't come from,
    found by the question plus the names of the top chunk's best sentence; n = 1 is hybrid."""
    from extok_rag.ask.retrieval import bridge_names

    snapshot, _ = built
    question = "Which document is reStructuredText?"
    hybrid = retrieve(snapshot, embedder, question, 3, "hybrid")
    two_hop = retrieve(snapshot, embedder, question, 3, "two-hop")
    assert [c.row_id for c in two_hop[:2]] == [c.row_id for c in hybrid[:2]] and len(two_hop) == 3
    if bridge_names(question, hybrid[0].text, embedder) and two_hop[2].row_id != hybrid[2].row_id:
        assert two_hop[2].doc_path not in {c.doc_path for c in hybrid[:2]}
    one = retrieve(snapshot, embedder, question, 1, "two-hop")
    assert [c.row_id for c in one] == [hybrid[0].row_id]
    text = "Victor Hugo wrote Les Miserables in Paris."  # one sentence: the best
    assert bridge_names("Who wrote Les Miserables?", text, embedder) == ["Victor Hugo", "Paris"]


def test_an_index_without_a_text_index_gets_one_on_the_next_index_run(
    built, embedder, corpus, models, settings, tmp_path, caplog
):
    assert built[0].table.has_text_index()
    writable = ChunkTable.open(tmp_path / "idx")
    writable._table.drop_index("text_idx")  # an index built before text retrieval:
    manifest = read_manifest(tmp_path / "idx")  # its committed version has no text index
    write_manifest(tmp_path / "idx", replace(manifest, table_version=writable.version))
    old = open_index(tmp_path / "idx")
    assert not old.table.has_text_index()
    with pytest.raises(ExtokError, match="run `extok-rag index` on its corpus again"):
        retrieve(old, embedder, "Gamma", 2, "text")
    with caplog.at_level("WARNING", logger="extok_rag"):
        fallback = retrieve(old, embedder, "Gamma", 2, "hybrid")  # the default: still answers
    assert [c.row_id for c in fallback] == [c.row_id for c in retrieve(old, embedder, "Gamma", 2)]
    assert "retrieving by vectors only" in caplog.text
    build_index(corpus, tmp_path / "idx", models, settings)  # nothing else changed
    again = open_index(tmp_path / "idx")
    assert again.table.has_text_index()
    assert again.manifest.table_version > old.manifest.table_version
    assert retrieve(again, embedder, "reStructuredText", 1, "text")[0].doc_path == "c.rst"

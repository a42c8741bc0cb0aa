"""Online reading (`extok_rag.ask.online`, the paper's online mode) on the tiny Llama: sessions
read over one KV cache give what one forward over the condensed history gives, the cache holds
only the condensed history, k auto fits the window, and `extok-rag read` answers or refuses
bad input in one line."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from extok_rag.ask.online import (
    OnlineConfig,
    OnlineReader,
    closing_text,
    condensed_positions,
    frame_ids,
    online_ks,
)
from extok_rag.cli import app
from extok_rag.config import GenerationConfig, TokenizerConfig
from extok_rag.errors import ExtokError
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.generation import generate_ids
from extok_rag.models.mixed_input import EmbeddingSegment, TokenSegment

SESSION = 48
# two sessions at k=4 (12 positions each) run into the cache together
CFG = OnlineConfig(session_tokens=SESSION, question_tokens=32, answer_tokens=8, append_positions=24)


@pytest.fixture(scope="module")
def tokenizer(tiny_llm):
    return ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))


def stream(n: int, seed: int = 0) -> torch.Tensor:  # (n,) byte-level token ids
    return torch.randint(3, 259, (n,), generator=torch.Generator().manual_seed(seed))


def one_forward_row(tiny_llm, reader, ids, *tail):
    """The same condensed history as one mixed row: the opening, every session's embeddings."""
    history = [EmbeddingSegment(reader.condense(s)) for s in ids.split(SESSION)]
    return [TokenSegment(frame_ids(tiny_llm, "")[0]), *history, *tail]


def test_cached_sessions_give_the_logits_of_one_forward_over_the_history(tiny_llm, tokenizer):
    ids, stretch = stream(200), stream(100, seed=1)  # the stretch: scored in 3 slices
    reader = OnlineReader(tiny_llm, tokenizer, k=4, cfg=CFG)
    reader.read(ids)
    cached = reader.logits(stretch)  # (100, V)
    row = one_forward_row(tiny_llm, reader, ids, TokenSegment(stretch))
    full = tiny_llm.logits(tiny_llm.batch([row]))[0]  # (T, V)
    torch.testing.assert_close(cached, full[-100:], atol=1e-4, rtol=1e-4)
    nll = F.cross_entropy(full[-101:-1], stretch, reduction="none")  # first from the history
    torch.testing.assert_close(reader.score(stretch), nll, atol=1e-4, rtol=1e-4)
    assert reader.cache_length == reader.positions  # the stretch was dropped


def test_a_scored_session_is_read_after_the_sessions_before_it(tiny_llm, tokenizer):
    ids = stream(3 * SESSION)
    reader = OnlineReader(tiny_llm, tokenizer, k=8, cfg=CFG)
    last = reader.read(ids, score=True)[-1]
    head, tail = ids[: 2 * SESSION], ids[2 * SESSION :]
    row = one_forward_row(tiny_llm, reader, head, TokenSegment(tail))
    full = tiny_llm.logits(tiny_llm.batch([row]))[0]
    expected = F.cross_entropy(full[-SESSION - 1 : -1], tail, reduction="none")
    assert last.nll is not None and last.nll.shape == (SESSION,)
    torch.testing.assert_close(last.nll, expected, atol=1e-4, rtol=1e-4)


def test_the_cache_holds_only_the_condensed_history(tiny_llm, tokenizer):
    reader = OnlineReader(tiny_llm, tokenizer, k=8, cfg=CFG)
    expected = reader.opening_positions
    assert reader.cache_length == expected > 0
    for session in stream(200).split(SESSION):  # 48, 48, 48, 48, 8
        read = reader.read(session, score=True)[0]  # scoring flushed the sessions before it
        expected += -(-len(session) // 8)
        assert read.condensed == -(-len(session) // 8)
        assert reader.positions == expected and reader.pending_positions == read.condensed
        assert reader.cache_length == reader.cached == expected - read.condensed
    assert reader.history_positions == condensed_positions(200, SESSION, 8) == 25
    reader.flush()
    assert reader.cache_length == reader.cached == reader.positions and not reader.pending_positions
    assert (reader.tokens_read, reader.sessions) == (200, 5)


def test_an_answer_is_greedy_decoding_of_the_online_frame(tiny_llm, tokenizer):
    ids = stream(100)
    reader = OnlineReader(tiny_llm, tokenizer, k=4, cfg=CFG)
    reader.read(ids)
    gen = GenerationConfig(max_new_tokens=6, repeat_stop=0)
    question = "What was read?"
    closing = TokenSegment(frame_ids(tiny_llm, question)[1])
    expected = list(generate_ids(tiny_llm, one_forward_row(tiny_llm, reader, ids, closing), gen))
    pieces = list(reader.ask(question, gen))
    assert "".join(pieces) == tiny_llm.tokenizer.decode(expected, skip_special_tokens=True)
    assert reader.cache_length == reader.positions  # the question and answer were dropped
    assert reader.answer(question, gen) == "".join(pieces)  # and asking again reads the same
    pieces = reader.ask(question, gen)
    for _ in pieces:
        break
    pieces.close()  # an answer stopped early is dropped too
    assert reader.cache_length == reader.positions


def test_a_read_interrupted_inside_the_llm_leaves_the_reader_as_it_was(tiny_llm, tokenizer):
    ids = stream(100)
    reader = OnlineReader(tiny_llm, tokenizer, k=4, cfg=CFG)
    reader.read(ids[:SESSION])  # pending: 12 of the 24 that run in together
    before, cached = reader.positions, reader.cached
    assert reader.pending_positions == 12

    def interrupt(*_):
        raise KeyboardInterrupt

    hook = tiny_llm.model.model.layers[2].register_forward_hook(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            reader.read(ids[SESSION:])  # layers 0 and 1 have taken the session's keys
    finally:
        hook.remove()
    assert reader.positions == before and reader.sessions == 1
    assert reader.pending_positions == 12  # the first session is still kept, not lost
    assert all(layer.get_seq_length() == cached for layer in reader.cache.layers)
    reader.read(ids[SESSION:])
    fresh = OnlineReader(tiny_llm, tokenizer, k=4, cfg=CFG)
    fresh.read(ids)
    torch.testing.assert_close(reader.logits(ids[:8]), fresh.logits(ids[:8]))


def test_the_frame_is_the_chat_template_around_the_history(tiny_llm):
    opening, closing = frame_ids(tiny_llm, "Why?")
    decode = tiny_llm.tokenizer.decode
    assert decode(opening) == "<|im_start|>user\nContext:\n"
    assert decode(closing) == closing_text("Why?") + "<|im_end|>\n<|im_start|>assistant\n"
    assert torch.equal(frame_ids(tiny_llm, "Something else?")[0], opening)


def test_auto_k_keeps_a_long_input_in_the_window(tiny_llm, tokenizer):
    cfg = OnlineConfig(session_tokens=64, question_tokens=16, answer_tokens=16)
    n = 3000
    reader = OnlineReader.for_tokens(tiny_llm, tokenizer, n, cfg)
    fixed = 64 + 16 + 16 + reader.opening_positions

    def fits(k: int) -> bool:
        return fixed + condensed_positions(n, 64, k) <= tiny_llm.max_positions

    assert fits(reader.k) and not any(fits(k) for k in online_ks(None) if k < reader.k)
    reader.read(stream(n))
    assert reader.positions + 64 + 16 + 16 <= tiny_llm.max_positions
    reader.flush()
    assert reader.cache_length == reader.positions


@pytest.mark.parametrize("append", [1, 7, 1000])
def test_sessions_run_into_the_cache_together_read_as_one_at_a_time(tiny_llm, tokenizer, append):
    """Pending sessions run in together (every 1, 7 or 1000 positions: once, on demand) give
    the history that one session at a time gives: the same scores and answers."""
    ids, stretch = stream(300), stream(60, seed=2)
    alone = OnlineReader(tiny_llm, tokenizer, k=4, cfg=replace(CFG, append_positions=1))
    together = OnlineReader(tiny_llm, tokenizer, k=4, cfg=replace(CFG, append_positions=append))
    alone.read(ids)
    together.read(ids)
    assert together.positions == alone.positions == alone.cached
    assert together.pending_positions == {1: 0, 7: 3, 1000: 75}[append]  # 6 x 12 + 3
    torch.testing.assert_close(together.score(stretch), alone.score(stretch), atol=1e-4, rtol=1e-4)
    assert together.pending_positions == 0 and together.cache_length == together.positions
    gen = GenerationConfig(max_new_tokens=6, repeat_stop=0)
    assert together.answer("What was read?", gen) == alone.answer("What was read?", gen)
    with pytest.raises(ExtokError, match="append positions"):
        OnlineConfig(append_positions=0)


def test_a_fixed_k_that_cannot_fit_is_refused_in_one_line(tiny_llm, tokenizer):
    cfg = OnlineConfig(session_tokens=64, k=2, question_tokens=16, answer_tokens=16)
    with pytest.raises(ExtokError) as err:
        OnlineReader.for_tokens(tiny_llm, tokenizer, 3000, cfg)
    assert "k=2" in str(err.value) and "window is 512" in str(err.value)
    assert "use a larger k or auto" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ExtokError, match="read less"):  # even the largest k cannot
        OnlineReader.for_tokens(tiny_llm, tokenizer, 100_000, OnlineConfig(session_tokens=64))
    with pytest.raises(ExtokError, match="k=3"):
        OnlineConfig(k=3)


def test_a_scoring_reader_has_no_frame(tiny_llm, tokenizer):
    reader = OnlineReader(tiny_llm, tokenizer, k=4, cfg=OnlineConfig(frame="none"))
    assert reader.positions == reader.cache_length == 0
    assert reader.score(stream(10)).shape == (9,)  # nothing precedes the first token
    reader.read(stream(20))
    assert reader.positions == 5 and reader.score(stream(10)).shape == (10,)
    with pytest.raises(ExtokError, match="only scores"):
        reader.answer("q")


# -- the CLI --------------------------------------------------------------------------------
runner = CliRunner()


def read_args(tiny_llm_dir, *args: str) -> list[str]:
    return [
        "read",
        *args,
        "--llm",
        str(tiny_llm_dir),
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--session-tokens",
        "64",
        "--max-new-tokens",
        "5",
    ]


def test_read_files_and_answer(tiny_llm_dir, tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.md"
    first.write_text("Cats sleep sixteen hours a day. " * 6)
    second.write_text("# Dogs\n\nDogs sleep twelve hours a day. " * 4)
    result = runner.invoke(app, read_args(tiny_llm_dir, str(first), str(second), "--ask", "Q?"))
    assert result.exit_code == 0, result.output
    assert "sessions at k=" in result.output and "(auto)" in result.output
    result = runner.invoke(app, [*read_args(tiny_llm_dir, str(first)), "--k", "8"], input="Q?\n")
    assert result.exit_code == 0, result.output
    assert "k=8 (fixed)" in result.output and "interactive" in result.output


def test_read_refuses_bad_input_in_one_line(tiny_llm_dir, tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "binary.txt").write_bytes(b"abc\x00\x01\x02" * 10)
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x81" * 10)
    (tmp_path / "ok.txt").write_text("Some text to read.")
    cases = {
        "does not exist": [str(tmp_path / "missing.txt")],
        "no text in it": [str(tmp_path / "empty.txt")],
        "binary file": [str(tmp_path / "binary.txt")],
        "not UTF-8": [str(tmp_path / "blob.bin")],
        "k in 2, 4, 8, 16, 32": [str(tmp_path / "ok.txt"), "--k", "3"],
        "expected a positive integer": [str(tmp_path / "ok.txt"), "--k", "x"],
    }
    for message, args in cases.items():
        result = runner.invoke(app, read_args(tiny_llm_dir, *args))
        assert result.exit_code == 1, (message, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_ctrl_c_while_reading_stops_cleanly(tiny_llm_dir, tmp_path, monkeypatch):
    def interrupted(self, ids, score=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(OnlineReader, "read_session", interrupted)
    (tmp_path / "ok.txt").write_text("Some text to read. " * 10)
    result = runner.invoke(app, read_args(tiny_llm_dir, str(tmp_path / "ok.txt"), "--ask", "Q"))
    assert result.exit_code == 130 and "interrupted" in result.output
    assert "Traceback" not in result.output

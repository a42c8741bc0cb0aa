"""The Table 1 protocol on a tiny random Llama (512 positions) and synthetic books."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from extok_rag.config import TokenizerConfig
from extok_rag.evaluation import lm
from extok_rag.evaluation.journal import Journal
from extok_rag.evaluation.lm import (
    EvaluationError,
    LMEvalConfig,
    embedding_count,
    evaluate_lm,
    plan_rows,
    sample_windows,
    split_window,
    target_nll,
    truncate_context,
)
from extok_rag.evaluation.lm_report import lm_markdown
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.mixed_input import TokenSegment
from extok_rag.training.objective import row_losses

CFG = LMEvalConfig(
    lengths=(128, 256),
    windows=3,
    ks=(2, 4),
    chunk_len=32,
    target_len=32,
    raw_positions=96,
    batch_tokens=1024,
)


@pytest.fixture(scope="module")
def zero_layer(tiny_llm):
    """A 0-layer tokenizer: its states are the LLM's own token embeddings."""
    return ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=0))


@pytest.fixture
def recorded_rows(monkeypatch):
    """Every row the evaluation sends to the LLM, in order."""
    seen = []
    real = lm.target_nll

    def spy(llm, rows, target_len):
        seen.extend(rows)
        return real(llm, rows, target_len)

    monkeypatch.setattr(lm, "target_nll", spy)
    return seen


def test_windows_are_deterministic_and_spread():
    sizes = [1000, 300, 2000, 5000]
    windows = sample_windows(sizes, 9, longest=500, seed=3)
    assert windows == sample_windows(sizes, 9, longest=500, seed=3)
    assert windows != sample_windows(sizes, 9, longest=500, seed=4)
    assert [w.book for w in windows] == [0, 2, 3] * 3  # book 1 is too short
    assert all(500 <= w.end <= sizes[w.book] for w in windows)
    with pytest.raises(EvaluationError):
        sample_windows([100], 1, longest=500, seed=0)


def test_truncation_keeps_the_most_recent_tokens():
    ctx = torch.arange(10)
    assert truncate_context(ctx, 3).tolist() == [7, 8, 9]
    assert truncate_context(ctx, 50).tolist() == list(range(10))
    context, target = split_window(torch.arange(20), 5)
    assert target.tolist() == [15, 16, 17, 18, 19] and context.tolist() == list(range(15))


def test_embedding_count_matches_compress(tiny_llm, zero_layer):
    for n, k, chunk in [(96, 4, 32), (100, 3, 32), (7, 16, 32), (64, 1, 32)]:
        ids = torch.randint(3, 200, (n,))
        got = sum(len(e) for e in zero_layer.compress(ids, k, chunk))
        assert embedding_count(n, k, chunk) == got


def test_target_nll_equals_row_losses(tiny_llm):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 250, (100,), generator=gen)
    rows = [[TokenSegment(ids[: 60 - n], scored=False), TokenSegment(ids[60:])] for n in (0, 20)]
    ours = target_nll(tiny_llm, rows, 40)
    ref = row_losses(tiny_llm, rows)
    assert ref.count.tolist() == [40, 40]
    torch.testing.assert_close(ours, ref.nll, rtol=1e-5, atol=1e-4)


def test_rows_share_windows_and_use_the_positions_claimed(
    tiny_llm, zero_layer, recorded_rows, books
):
    result = evaluate_lm(tiny_llm, books, CFG, {"extok": zero_layer, "untrained": zero_layer})
    ids = [tiny_llm.tokenize(b.text) for b in books]
    # every row ends with the same target; every context is the window's most recent tokens
    targets = set()
    for row in recorded_rows:
        targets.add(tuple(row[-1].ids.tolist()))
    expected = {
        tuple(w.tokens(ids, t)[-CFG.target_len :].tolist())
        for t in CFG.lengths
        for w in result.windows
    }
    assert targets == expected  # the targets do not depend on T either
    lengths = {sum(len(s) for s in row) for row in recorded_rows}
    for t in CFG.lengths:
        for key, cell in result.cells[t].items():
            assert len(cell.nll) == CFG.windows, key
            assert cell.positions in lengths
        ctx = t - CFG.target_len
        for k in CFG.ks:
            n = embedding_count(ctx, k, CFG.chunk_len)
            assert result.cells[t][f"raw-equal@{k}"].positions == n + CFG.target_len
            assert result.cells[t][f"extok@{k}"].positions == n + CFG.target_len
        assert result.cells[t]["raw@96"].positions == min(96, t)
        assert result.cells[t]["raw-full"].positions == t
        assert result.cells[t]["none"].positions == CFG.target_len + 1
    # raw rows read the most recent tokens of their window: [context suffix, target] is the
    # window's last n + target_len tokens
    raw = [torch.cat([r[0].ids, r[1].ids]) for r in recorded_rows if isinstance(r[0], TokenSegment)]
    assert raw
    for row in raw:
        assert any(torch.equal(row, w.tokens(ids, row.numel())) for w in result.windows)


def test_evaluation_is_deterministic(tiny_llm, zero_layer, books):
    a = evaluate_lm(tiny_llm, books, CFG, {"untrained": zero_layer})
    b = evaluate_lm(tiny_llm, books, CFG, {"untrained": zero_layer})
    assert a.windows == b.windows
    for t in CFG.lengths:
        for key in a.cells[t]:
            assert a.cells[t][key].nll == b.cells[t][key].nll


def test_rows_that_do_not_fit_are_na(tiny_llm, zero_layer, books):
    cfg = LMEvalConfig(lengths=(256, 640), windows=2, ks=(1, 2), chunk_len=32, target_len=32)
    result = evaluate_lm(tiny_llm, books, cfg, {"untrained": zero_layer})
    long = result.cells[640]
    assert long["raw-full"].na and long["raw-full"].ppl is None  # 640 > 512 positions
    assert long["untrained@1"].na and long["raw-equal@1"].na
    assert not long["untrained@2"].na and long["untrained@2"].ppl is not None  # 304 + 32
    assert long["raw@2048"].na  # a 2,048-position budget never fits a 512 window
    assert long["extok@2"].na == "no tokenizer given"
    assert not result.cells[256]["raw-full"].na
    assert "n/a" in lm_markdown(result)


def test_plan_notes_missing_tokenizer():
    plan = plan_rows(CFG, 256, 512, ["untrained"], {"extok": "no checkpoint"})
    by_key = {r.key: r for r in plan}
    assert by_key["extok@2"].na == "no checkpoint" and not by_key["untrained@2"].na


def test_zero_layer_tokenizer_at_k1_equals_full_raw_context(tiny_llm, zero_layer, books):
    """The embeddings of a 0-layer tokenizer are the token embeddings: at k=1 row (d) reads
    exactly what row (c) reads."""
    cfg = LMEvalConfig(lengths=(128, 256), windows=2, ks=(1,), chunk_len=32, target_len=32)
    result = evaluate_lm(tiny_llm, books, cfg, {"extok": zero_layer})
    for t in cfg.lengths:
        full, extok = result.cells[t]["raw-full"], result.cells[t]["extok@1"]
        assert extok.positions == full.positions
        assert extok.nll == full.nll
        assert result.cells[t]["raw-equal@1"].nll == full.nll


class Stop(Exception):
    """Stands for Ctrl-C / kill part-way through a run."""


def test_eval_lm_resumes_finished_windows(tiny_llm, zero_layer, books, tmp_path, monkeypatch):
    whole = evaluate_lm(tiny_llm, books, CFG, {"untrained": zero_layer})
    journal = Journal.open("lm", {"run": 1}, root=tmp_path)
    real = lm._evaluate_window
    calls = []

    def stops_after_four(*args):
        if len(calls) == 4:
            raise Stop
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(lm, "_evaluate_window", stops_after_four)
    with pytest.raises(Stop):
        evaluate_lm(tiny_llm, books, CFG, {"untrained": zero_layer}, journal=journal)
    monkeypatch.setattr(lm, "_evaluate_window", real)
    resumed = evaluate_lm(
        tiny_llm,
        books,
        CFG,
        {"untrained": zero_layer},
        journal=Journal.open("lm", {"run": 1}, root=tmp_path),
    )
    assert resumed.timing["resumed_windows"] == 4
    for t in CFG.lengths:
        for key, cell in whole.cells[t].items():
            assert resumed.cells[t][key].nll == pytest.approx(cell.nll)


def test_states_round_trip_through_index_encodings(tiny_llm, books):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=2))
    runs = {
        enc: evaluate_lm(tiny_llm, books, replace(CFG, states=enc), {"untrained": tok})
        for enc in ("float32", "float16", "int8")
    }
    base = runs["float32"].cells[256]["untrained@2"].ppl
    for enc in ("float16", "int8"):
        ppl = runs[enc].cells[256]["untrained@2"].ppl
        assert ppl == pytest.approx(base, rel=0.02)  # storage barely moves the numbers
    assert (
        runs["int8"].cells[256]["untrained@2"].nll != runs["float32"].cells[256]["untrained@2"].nll
    )
    with pytest.raises(EvaluationError):
        replace(CFG, states="int4")

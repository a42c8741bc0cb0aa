"""benchmarks/reader_oracle.py's fit: free vectors in the reconstruction frame, fitted with the
LLM frozen, close the gap; the LLM's weights do not move. The answers mode's chunks: every row
recorded per question, so arms pair, and the table reads them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import reader_oracle

from extok_rag.config import TokenizerConfig
from extok_rag.datasets.training_files import QAExample
from extok_rag.models.ask_frame import ask_frame
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.training.frame import bare_rows, raw_rows, reconstruction_example
from extok_rag.training.objective import row_losses

PARAGRAPHS = ["Ada Lovelace wrote notes in 1843.", "The river Thames flows through London."]


def test_fitted_vectors_close_the_reconstruction_gap_with_the_llm_frozen(tiny_llm):
    examples = [reconstruction_example([p]) for p in PARAGRAPHS]
    baselines = reader_oracle.repeat_baselines(tiny_llm, examples, 64)
    with torch.no_grad():  # the same rows' per-token NLL, as the probe computes it
        none = float(row_losses(tiny_llm, bare_rows(tiny_llm, examples)).mean())
        raw = float(row_losses(tiny_llm, raw_rows(tiny_llm, examples, 64)).mean())
    for name, value in (("none", none), ("raw", raw)):
        assert abs(reader_oracle.per_token(baselines[name], baselines["tokens"]) - value) < 1e-5
    d = tiny_llm.model.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    users = [ask_frame(ex.question, [0.02 * torch.randn(4, d, generator=gen)]) for ex in examples]
    start = [p.clone() for u in users for p in u if isinstance(p, torch.Tensor)]
    weights = [w.clone() for w in tiny_llm.model.parameters()]
    logged: list[str] = []

    result = reader_oracle.fit(tiny_llm, examples, users, 30, 0.3, 10, baselines, logged.append)

    assert list(result["curve"]) == [0, 10, 20, 30] and len(logged) == 4
    assert result["gap"] > result["curve"][0] + 0.2  # the fitted vectors carry the paragraphs
    fitted = [p for u in users for p in u if isinstance(p, torch.Tensor)]
    assert all(
        not torch.equal(a, b) and not b.requires_grad for a, b in zip(start, fitted, strict=True)
    )
    assert all(torch.equal(a, b) for a, b in zip(weights, tiny_llm.model.parameters(), strict=True))
    assert 0.0 <= result["greedy_whole"] <= 1.0 and 0.0 <= result["greedy_f1"] <= 1.0
    assert len(result["whole"]) == len(result["nll_end"]) == len(result["nll_start"]) == 2
    assert sum(result["nll_end"]) < sum(result["nll_start"])
    assert result["rms_end"] > 0


def test_blank_rows_read_the_paragraphs_own_tensor_and_ask_from_the_paragraph_alone():
    states = [torch.zeros(2, 8), torch.ones(3, 8)]
    examples, users = reader_oracle.blank_rows(PARAGRAPHS, states, 2)
    assert len(examples) == 4 and examples == reader_oracle.blank_rows(PARAGRAPHS, states, 2)[0]
    for i, (ex, user) in enumerate(zip(examples, users, strict=True)):
        paragraph, state = PARAGRAPHS[i // 2], states[i // 2]
        assert ex.question.startswith("Fill in the blank") and ex.answer in paragraph
        tensors = [p for p in user if torch.is_tensor(p)]
        assert len(tensors) == 1 and tensors[0] is state  # the very tensor that fit moves


def items() -> list[QAExample]:
    facts = [
        ("Who wrote notes in 1843?", "Ada Lovelace", "Ada Lovelace wrote notes in 1843."),
        ("What flows through London?", "the Thames", "The river Thames flows through London."),
        ("Where is the Louvre?", "Paris", "The Louvre is a museum in Paris, France."),
    ]
    return [
        QAExample(f"q{i}", q, a, (f"T{i}\n\n{text}", f"U{i}\n\nSome other words here."))
        for i, (q, a, text) in enumerate(facts)
    ]


def test_answer_chunk_reads_own_and_the_next_items_paragraphs(tiny_llm):
    chunk = reader_oracle.AnswerChunk.build(tiny_llm, items(), 128)
    assert chunk.sizes == [2, 2, 2] and len(chunk.repeats) == 6
    states = [torch.full((1, 4), float(i)) for i in range(6)]
    own, other = chunk.users(states, 0), chunk.users(states, 1)
    tensors = lambda user: [float(p[0, 0]) for p in user if torch.is_tensor(p)]  # noqa: E731
    assert [tensors(u) for u in own] == [[0, 1], [2, 3], [4, 5]]
    assert [tensors(u) for u in other] == [[2, 3], [4, 5], [0, 1]]  # the last wraps in its chunk


def test_arms_record_every_question_so_they_pair(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1)).eval()
    chunk = reader_oracle.AnswerChunk.build(tiny_llm, items(), 128)
    base = reader_oracle.chunk_base(tiny_llm, tok, chunk, 4)
    for key in ("none", "raw", "own_tokenizer", "other_tokenizer"):
        assert len(base[f"nll_{key}"]) == len(base[f"hit_{key}"]) == 3
    assert len(base["recon_none"]) == len(base["recon_raw"]) == 6
    weights = [w.clone() for w in tiny_llm.model.parameters()]
    arms = {
        b: reader_oracle.chunk_arm(tiny_llm, tok, chunk, 4, b, base, 3, 0.3, lambda m: None)
        for b in (0, 1)
    }
    assert arms[0]["blank_rows"] == 0 and arms[1]["blank_rows"] > 0
    for arm in arms.values():
        assert len(arm["hit_own"]) == len(arm["nll_other"]) == 3 and len(arm["nll_end"]) == 6
        assert arm["nll_start"] == arms[0]["nll_start"]  # both arms start at the same states
    assert all(torch.equal(a, b) for a, b in zip(weights, tiny_llm.model.parameters(), strict=True))
    lines = reader_oracle.answers_table(base, arms, 4, "tiny")
    assert lines[0].startswith("| ×4, 3 items |")
    assert sum(line.startswith("| fitted to repeat") for line in lines) == 4  # totals, paired
    assert "fitted to repeat and fill 1 blanks" in "\n".join(lines)


def test_repeating_against_answering_counts_items_whose_answer_paragraph_comes_back(tiny_llm):
    chunk = reader_oracle.AnswerChunk.build(tiny_llm, items(), 128)
    bearing = chunk.bearing()
    assert bearing == [[True, False]] * 3  # each answer is in its item's first paragraph
    base = {"hit_raw": [True, True, False]}
    arm = {"whole": [True, False, False, True, True, True], "hit_own": [False, True, True]}
    line = reader_oracle.repeat_answer_table(base, {0: arm}, bearing)[-1]
    # items 0 and 2 repeat their answer's paragraph whole (item 1 only its other one)
    assert line == "| fitted to repeat | 2 of 3 | 1 / 1; 1 / 1 (p 1.000) |"


def test_at_ratio_1_the_arm_reports_its_vectors_cosine_to_their_tokens(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1)).eval()
    chunk = reader_oracle.AnswerChunk.build(tiny_llm, items(), 128)
    ids = [reader_oracle.text_tokens(tiny_llm, p, 128).ids for p in chunk.paragraphs]
    own = [tiny_llm.embed_tokens(i).float() for i in ids]
    assert chunk.token_cosine(tiny_llm, own) == pytest.approx([1.0] * len(own))
    with pytest.raises(ValueError):
        chunk.token_cosine(tiny_llm, [e[::2] for e in own])
    base = reader_oracle.chunk_base(tiny_llm, tok, chunk, 1)
    arm = reader_oracle.chunk_arm(tiny_llm, tok, chunk, 1, 0, base, 2, 0.3, lambda m: None)
    assert len(arm["token_cos_start"]) == len(arm["token_cos_end"]) == 6
    assert "token_cos_start" not in reader_oracle.chunk_arm(
        tiny_llm,
        tok,
        chunk,
        4,
        0,
        reader_oracle.chunk_base(tiny_llm, tok, chunk, 4),
        1,
        0.3,
        lambda m: None,
    )


def test_against_pairs_each_arm_per_question_with_another_ratio():
    base = {"hit_raw": [True, True, False, False]}
    here = {
        0: {"hit_own": [True, False, True, False], "token_cos_start": [0.5], "token_cos_end": [0.7]}
    }
    there = {0: {"hit_own": [False, False, False, False]}}
    lines = reader_oracle.against_table(base, here, 1, there, 4)
    assert lines[0].startswith("| greedy, own paragraphs, 4 items | ×1 / ×4 / raw text |")
    assert lines[2] == "| fitted to repeat | 2 / 0 / 2 | 2 / 0 (p 0.500) | 1 / 1 (p 1.000) |"
    assert len(lines) == 3
    assert (
        "0.500 (the tokenizer's states) → 0.700 (fitted)" in reader_oracle.cosine_lines(here, 1)[0]
    )
    assert reader_oracle.cosine_lines(there, 4) == []

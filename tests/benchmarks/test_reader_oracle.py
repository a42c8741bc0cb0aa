"""benchmarks/reader_oracle.py's fit: free vectors in the reconstruction frame, fitted with the
LLM frozen, close the gap; the LLM's weights do not move."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import reader_oracle

from extok_rag.models.ask_frame import ask_frame
from extok_rag.training.frame import bare_rows, raw_rows, reconstruction_example
from extok_rag.training.objective import row_losses

PARAGRAPHS = ["Ada Lovelace wrote notes in 1843.", "The river Thames flows through London."]


def test_fitted_vectors_close_the_reconstruction_gap_with_the_llm_frozen(tiny_llm):
    examples = [reconstruction_example([p]) for p in PARAGRAPHS]
    with torch.no_grad():
        baselines = {
            "none": float(row_losses(tiny_llm, bare_rows(tiny_llm, examples)).mean()),
            "raw": float(row_losses(tiny_llm, raw_rows(tiny_llm, examples, 64)).mean()),
        }
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

"""benchmarks/company_oracle.py: each paragraph read among the next ones, the own one at every
position equally often; the fit is the repeat arm's; the rule read as written before the run."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import company_oracle
import sibling_oracle

from extok_rag.config import TokenizerConfig
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer

from .test_sibling_oracle import PARAGRAPHS, QUESTIONS


def test_the_own_paragraph_takes_every_position_in_turn():
    # two paragraphs with two siblings each, chunks of 2: held-out questions, then siblings
    assert company_oracle.positions(2, 2, 2, 1) == [0, 1, 0, 0, 1, 1]
    assert company_oracle.positions(4, 1, 2, 1) == [0, 1, 0, 1] * 2  # the next chunk starts at 0
    parts = ["a", "b", "c", "d"]
    ones = [company_oracle.in_company(parts, i, 1) for i in range(4)]
    assert ones == [["a", "b"], ["c", "b"], ["c", "d"], ["a", "d"]]
    threes = [company_oracle.in_company(parts, i, 3) for i in range(4)]
    assert threes[1] == ["c", "b", "d", "a"]
    assert [t.index(p) for t, p in zip(threes, parts, strict=True)] == [0, 1, 2, 3]
    assert all(sorted(t) == parts for t in threes)


def test_company_arm_is_the_repeat_fit_read_in_company(tiny_llm, tmp_path):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1)).eval()
    items = sibling_oracle.sibling_items(tiny_llm, PARAGRAPHS, QUESTIONS, 5, 3, 160)
    chunk = sibling_oracle.answer_chunk(items, 160)
    base = sibling_oracle.sibling_base(tiny_llm, tok, chunk, items, 4)
    weights = [w.clone() for w in tiny_llm.model.parameters()]
    args = Namespace(steps=2, lr=0.3, others=[1])
    saved = tmp_path / "vectors" / "chunk0.pt"
    company = company_oracle.company_arm(tiny_llm, tok, chunk, items, 4, base, args, print, saved)
    repeat = sibling_oracle.sibling_arm(
        tiny_llm, tok, chunk, items, 4, "repeat", base, 2, 0.3, print
    )
    assert company["nll_end"] == repeat["nll_end"]  # the same fit
    vectors = torch.load(saved)
    assert len(vectors) == 2 and all(v.ndim == 2 and v.dtype == torch.float32 for v in vectors)
    for name in ("vectors", "raw"):
        assert len(company[f"hit_{name}_1"]) == 2 and len(company[f"sib_hit_{name}_1"]) == 6
    assert all(torch.equal(a, b) for a, b in zip(weights, tiny_llm.model.parameters(), strict=True))
    lines = company_oracle.report(base, company, repeat, [1], 4, 2, 3)
    assert lines[0].startswith("| ×4, every question (8) |")
    assert lines[2].startswith("| alone (the repeat arm) |")
    assert lines[3].startswith("| with 1 other |")
    assert any(line.endswith("every repeat NLL the same.") for line in lines)
    assert [line.split(" |")[0] for line in lines[-2:]] == [
        "| with 1 other: 1 of 2",
        "| with 1 other: 2 of 2",
    ]
    assert sum(int(line.split("|")[2]) for line in lines[-2:]) == 8
    assert not any(line.startswith("Rule") for line in lines)  # the rule needs 1 and 3
    with_three = Namespace(steps=2, lr=0.3, others=[1, 3])
    with pytest.raises(ValueError, match="no 3 others"):
        company_oracle.company_arm(tiny_llm, tok, chunk, items, 4, base, with_three, print)


def test_qualifies_and_the_verdict():
    none = [False] * 20
    raw = [True] * 10 + [False] * 10
    six = [True] * 6 + [False] * 14
    three = [True] * 3 + [False] * 17
    assert company_oracle.qualifies(six, raw, none)  # 6 >= 4, 6 / 0 beats none (p 0.031)
    assert not company_oracle.qualifies(three, raw, none)  # 3 < 4
    assert not company_oracle.qualifies(six, [True] * 20, none)  # 6 < 8
    assert company_oracle.verdict(True, True).startswith("(m)")
    assert company_oracle.verdict(True, False).startswith("(n)")
    assert company_oracle.verdict(False, False).startswith("(o)")
    assert company_oracle.verdict(False, True).startswith("(m) at 3")

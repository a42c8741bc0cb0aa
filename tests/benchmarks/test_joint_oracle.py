"""benchmarks/joint_oracle.py: each group's vectors fitted together to repeat it, every
question read in its group four ways; the rules read as written before the run."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import joint_oracle
import sibling_oracle

from extok_rag.config import TokenizerConfig
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer

from .test_sibling_oracle import PARAGRAPHS, QUESTIONS


def test_groups_and_positions():
    parts, texts = ["a", "b", "c", "d"], ["A", "B", "C", "D"]
    assert [joint_oracle.in_group(parts, i, 2) for i in range(4)] == [["a", "b"]] * 2 + [
        ["c", "d"]
    ] * 2
    assert joint_oracle.mixed(parts, texts, 2, 2) == ["c", "D"]
    assert joint_oracle.mixed(parts, texts, 3, 4) == ["A", "B", "C", "d"]
    # two paragraphs with two siblings each: held-out questions, then siblings
    assert joint_oracle.positions(2, 2, 2) == [0, 1, 0, 0, 1, 1]


def test_joint_arm_fits_groups_together_and_reads_four_ways(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1)).eval()
    items = sibling_oracle.sibling_items(tiny_llm, PARAGRAPHS, QUESTIONS, 5, 3, 160)
    chunk = sibling_oracle.answer_chunk(items, 160)
    base = sibling_oracle.sibling_base(tiny_llm, tok, chunk, items, 4)
    repeat = sibling_oracle.sibling_arm(
        tiny_llm, tok, chunk, items, 4, "repeat", base, 2, 0.3, print
    )
    weights = [w.clone() for w in tiny_llm.model.parameters()]
    args = Namespace(steps=2, lr=0.3)
    alone = [torch.randn(40, tiny_llm.hidden_size) for _ in items]
    joint = joint_oracle.joint_arm(tiny_llm, tok, chunk, items, 4, 2, alone, args, print)
    assert len(joint["whole"]) == 1 and len(joint["nll_end"]) == 1  # one group of two, one row
    for name in joint_oracle.READS:
        assert len(joint[f"hit_{name}"]) == 2 and len(joint[f"sib_hit_{name}"]) == 6
    assert all(torch.equal(a, b) for a, b in zip(weights, tiny_llm.model.parameters(), strict=True))
    with pytest.raises(ValueError, match="groups of 3"):
        joint_oracle.joint_arm(tiny_llm, tok, chunk, items, 4, 3, alone, args, print)
    gaps = {"joint": joint["gap"], "alone": repeat["gap"]}
    lines = joint_oracle.report(base, joint, repeat, gaps, 2, 4, 3)
    assert lines[0].startswith("| ×4, in groups of 2, every question (8) |")
    assert [line.split(" |")[0] for line in lines[2:7]] == [
        "| jointly fitted vectors (the group repeated together)",
        "| alone-fitted vectors (each paragraph repeated alone)",
        "| own alone-fitted vectors, the others raw text",
        "| raw text",
        "| alone-fitted vectors read alone (the repeat arm; raw text alone "
        f"{sum(base['hit_raw']) + sum(base['sib_hit_raw'])})",
    ]
    assert any(line.startswith("Rule (What next 20): (") for line in lines)
    assert [line.split(" |")[0] for line in lines[-2:]] == ["| 1 of 2", "| 2 of 2"]
    assert sum(int(line.split("|")[2]) for line in lines[-2:]) == 8


def test_the_rules():
    none = [False] * 20
    raw = [True] * 10 + [False] * 10
    six = [True] * 6 + [False] * 14
    three = [True] * 3 + [False] * 17
    assert joint_oracle.verdict(six, none, raw, none).startswith("(p)")
    # not qualifying against raw text of 20, but 6 / 0 ahead of alone (p 0.031)
    assert joint_oracle.verdict(six, none, [True] * 20, none).startswith("(q)")
    assert joint_oracle.verdict(three, none, [True] * 20, none).startswith("(r)")  # p 0.25
    assert joint_oracle.mixed_verdict(six, none).startswith("(s)")
    assert joint_oracle.mixed_verdict(none, six).startswith("(t)")  # behind is not (s)

"""benchmarks/recon_curve.py: the repeat fit read at each check, its last check the repeat
arm's own answers, and the rule read from the checks as written before the run."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import recon_curve
import sibling_oracle

from extok_rag.config import TokenizerConfig
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer

from .test_sibling_oracle import PARAGRAPHS, QUESTIONS


def test_curve_reads_every_check_and_ends_at_the_repeat_arm(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1)).eval()
    items = sibling_oracle.sibling_items(tiny_llm, PARAGRAPHS, QUESTIONS, 5, 3, 160)
    chunk = sibling_oracle.answer_chunk(items, 160)
    base = sibling_oracle.sibling_base(tiny_llm, tok, chunk, items, 4)
    weights = [w.clone() for w in tiny_llm.model.parameters()]
    args = Namespace(steps=3, lr=0.3, checks=[0, 1, 3])
    curve = recon_curve.curve_arm(tiny_llm, tok, chunk, items, 4, base, args, print)
    repeat = sibling_oracle.sibling_arm(
        tiny_llm, tok, chunk, items, 4, "repeat", base, 3, 0.3, print
    )
    for step in (0, 1, 3):
        assert len(curve[f"hit_{step}"]) == 2 and len(curve[f"sib_hit_{step}"]) == 6
        assert len(curve[f"nll_{step}"]) == 2
    assert "hit_2" not in curve
    assert curve["nll_0"] == repeat["nll_start"]  # the tokenizer's states, before any step
    assert curve["nll_3"] == curve["nll_end"] == repeat["nll_end"]  # the same fit
    assert curve["nll_1"] != curve["nll_0"]
    assert all(torch.equal(a, b) for a, b in zip(weights, tiny_llm.model.parameters(), strict=True))
    lines = recon_curve.report(base, curve, [0, 1, 3], 4, (curve, repeat))
    assert lines[0].startswith("| ×4 step |") and "every question (8)" in lines[0]
    assert [line.split(" |")[0] for line in lines[3:6]] == ["| 0", "| 1", "| 3"]
    assert any(line.startswith("Rule (What next 18): (") for line in lines)
    assert lines[-1].endswith("the 2 paragraphs it has read: every answer the same.")
    assert not recon_curve.report(base, curve, [0, 1, 3], 4)[-1].startswith("Step 3 against")


def test_verdict_takes_the_qualifying_check_of_least_gap():
    # rows: (step, gap, count, p against none); raw text answers 50, so the bar is 20
    verdict = recon_curve.verdict
    assert verdict([(0, 0.05, 2, 1.0), (40, 0.99, 19, 0.001)], 50).startswith("(l)")
    assert verdict([(0, 0.05, 2, 1.0), (40, 0.99, 25, 0.06)], 50).startswith("(l)")
    k = verdict([(4, 0.55, 19, 0.01), (8, 0.80, 20, 0.01), (40, 0.99, 30, 0.001)], 50)
    assert k.startswith("(k)") and "step 8" in k
    j = verdict([(4, 0.58, 20, 0.02), (8, 0.80, 22, 0.01), (40, 0.99, 18, 0.001)], 50)
    assert j.startswith("(j)") and "step 4" in j

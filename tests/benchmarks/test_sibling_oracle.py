"""benchmarks/sibling_oracle.py: items hold a held-out question and siblings that share no
answer with it or each other, all answerable from the paragraph as cut; the siblings arm fits
on the siblings' rows, the repeat arm does not, and every question is recorded so they pair."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import sibling_oracle

from extok_rag.config import TokenizerConfig
from extok_rag.datasets.qa_sets import QAItem
from extok_rag.evaluation.journal import Journal
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer

PARAGRAPHS = {
    "a/p000.txt": "Ada\n\nAda Lovelace wrote notes in 1843 in London about the engine of Babbage.",
    "b/p000.txt": "Thames\n\nThe river Thames flows through London and Oxford to the sea.",
    "c/p000.txt": "Louvre\n\nThe Louvre is a museum in Paris.",
}


def question(doc: str, i: int, text: str, answer: str) -> QAItem:
    return QAItem(f"{doc}-{i}", text, (answer,), (doc,))


QUESTIONS = (
    question("a/p000.txt", 0, "Who wrote notes?", "Ada Lovelace"),
    question("a/p000.txt", 1, "Whose notes?", "Lovelace"),  # shares the held-out's answer
    question("a/p000.txt", 2, "When?", "1843"),
    question("a/p000.txt", 3, "Where?", "London"),
    question("a/p000.txt", 4, "What did she write?", "notes"),
    question("b/p000.txt", 0, "What flows?", "the river Thames"),
    question("b/p000.txt", 1, "Through what city?", "London"),
    question("b/p000.txt", 2, "Where does it end?", "the sea"),
    question("b/p000.txt", 3, "What else does it reach?", "Oxford"),
    question("b/p000.txt", 4, "What is not here?", "Rome"),  # not in the paragraph
    question("c/p000.txt", 0, "Where is the Louvre?", "Paris"),
)


def test_items_keep_questions_answerable_from_the_cut_and_sharing_no_answer(tiny_llm):
    items = sibling_oracle.sibling_items(tiny_llm, PARAGRAPHS, QUESTIONS, 5, 3, 160)
    assert len(items) == 2  # the Louvre has one question; Thames keeps exactly 1 + 3
    by_held = {it.held_out.answer: it for it in items}
    assert set(by_held) == {"Ada Lovelace", "the river Thames"}
    ada = by_held["Ada Lovelace"]
    assert [s.answer for s in ada.siblings] == ["1843", "London", "notes"]  # "Lovelace" dropped
    thames = by_held["the river Thames"]
    assert [s.answer for s in thames.siblings] == ["London", "the sea", "Oxford"]
    for it in items:
        assert all(ex.contexts == (it.paragraph,) for ex in (it.held_out, *it.siblings))
    # a cut that loses the later answers loses the item
    assert sibling_oracle.sibling_items(tiny_llm, PARAGRAPHS, QUESTIONS, 5, 3, 8) == []


def test_arms_fit_on_their_own_rows_and_record_every_question(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1)).eval()
    items = sibling_oracle.sibling_items(tiny_llm, PARAGRAPHS, QUESTIONS, 5, 3, 160)
    chunk = sibling_oracle.answer_chunk(items, 160)
    base = sibling_oracle.sibling_base(tiny_llm, tok, chunk, items, 4)
    assert len(base["hit_none"]) == len(base["hit_own_tokenizer"]) == 2
    assert len(base["sib_hit_none"]) == len(base["sib_hit_raw"]) == 6
    weights = [w.clone() for w in tiny_llm.model.parameters()]
    arms = {
        arm: sibling_oracle.sibling_arm(tiny_llm, tok, chunk, items, 4, arm, base, 3, 0.3, print)
        for arm in sibling_oracle.ARMS
    }
    for cells in arms.values():
        assert len(cells["hit_own"]) == len(cells["hit_other"]) == 2 and len(cells["sib_hit"]) == 6
        assert cells["nll_start"] == arms["repeat"]["nll_start"]  # the same states to start
    # the repeat rows alone move differently from the repeat rows beside the siblings'
    assert arms["repeat"]["nll_end"] != arms["siblings"]["nll_end"]
    assert all(torch.equal(a, b) for a, b in zip(weights, tiny_llm.model.parameters(), strict=True))
    lines = sibling_oracle.report(base, arms, 4)
    assert lines[0].startswith("| ×4, 2 paragraphs |") and "siblings greedy (6)" in lines[0]
    assert sum("fitted to repeat" in line for line in lines) == 2


def test_resume_records_chunk_by_chunk_and_picks_up_at_the_piece_in_flight(tmp_path):
    journal = Journal.open("oracle", {"k": 4}, root=tmp_path)
    for c in range(2):
        journal.record(f"{c}/base", {"c": c})
    run = sibling_oracle.Run(None, None, [], [[], []], [None, None], journal)
    calls = []

    def arm(piece, c, base, log):
        if (piece, c) == ("b", 1) and not calls.count(("b", 1)):
            calls.append((piece, c))
            raise KeyboardInterrupt  # stopped with this piece in flight
        calls.append((piece, c))
        assert base == {"c": c}
        return {"piece": piece}

    with pytest.raises(KeyboardInterrupt):
        run.resume(["a", "b"], 4, arm)
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    reopened = Journal.open("oracle", {"k": 4}, root=tmp_path)
    assert set(reopened.done) == {"0/base", "1/base", "0/a", "0/b", "1/a"}
    run.journal = reopened
    run.resume(["a", "b"], 4, arm)
    assert calls[4:] == [("b", 1)]
    assert reopened.done["1/b"] == {"piece": "b"}
    run.resume(["c"], 4, arm, chunks=[1])  # only the chunks asked for
    assert calls[5:] == [("c", 1)] and "0/c" not in reopened.done

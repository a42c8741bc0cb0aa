"""HotpotQA split logic on a small synthetic HotpotQA-like file: evaluation draws, probe and
training never share a question or a paragraph (by title, text or 64-character window)."""

from __future__ import annotations

import json

import pytest

from extok_rag.datasets.qa_sets import draw_questions, hotpot_pool, hotpot_records
from extok_rag.datasets.qa_splits import (
    ExcludedParagraphs,
    eval_draw_ids,
    held_out_paragraphs,
    split_hotpot,
    titled,
)

DRAWS = ((0, 10), (1, 10))
BOILERPLATE = " It is part of the Made-Up Metropolitan Statistical Area of the Nowhere Region."


def paragraph(title: str, i: int) -> list[str]:
    return [f"{title} is a made-up paragraph for question {i}.", "  It is long  enough to matter."]


def raw_question(i: int) -> dict:
    gold = [f"Gold {i}a", f"Gold {i}b"]
    context = [[t, paragraph(t, i)] for t in (*gold, f"Other {i}x", f"Other {i}y")]
    context.append([f"Shared {i % 5}", paragraph(f"Shared {i % 5}", -1)])
    if i % 4 == 0:  # boilerplate shared across articles, in a gold paragraph
        context[0][1] = [*context[0][1], BOILERPLATE]
    if i == 5:
        context[1] = ["Squadland", ["Squadland is an evaluation-only article in SQuAD."]]
        gold[1] = "Squadland"
    if i == 6:
        context.append(["Squadland", ["Squadland as a distractor of question six, same title."]])
    support = [[gold[1], 0], [gold[0], 1]] if i % 3 == 0 else [[gold[0], 0], [gold[1], 0]]
    answer = {3: "yes", 7: "No"}.get(i, f"answer {i}")
    return {
        "_id": f"q{i}",
        "question": f"Question {i}?",
        "answer": answer,
        "context": repr(context) if i % 2 else context,  # both encodings occur
        "supporting_facts": repr(support) if i % 2 else support,
    }


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    path = tmp_path_factory.mktemp("hotpot") / "hotpotqa.json"
    path.write_text(json.dumps([raw_question(i) for i in range(40)]))
    return hotpot_records(str(path))


@pytest.fixture(scope="module")
def splits(records):
    squad = [("Squadland", "Squadland text as SQuAD has it.")]
    return split_hotpot(records, DRAWS, probe_size=4, probe_seed=0, also_excluded=squad)


def paragraphs_of(example) -> list[str]:
    return [*example.gold, *example.distractors]


def test_eval_ids_are_the_eval_qa_draws(records, splits):
    pool = hotpot_pool(records)
    expected = {r.qid for s, n in DRAWS for r in draw_questions(pool, n, s, "hotpotqa")}
    assert splits.eval_ids == expected == eval_draw_ids(records, DRAWS)
    assert 10 <= len(expected) <= 20


def test_questions_never_meet(splits):
    train = {e.qid for e in splits.train}
    probe = {e.qid for e in splits.probe}
    assert len(probe) == 4 and train
    assert not train & probe and not (train | probe) & splits.eval_ids
    assert not (train | probe) & {"q3", "q7"}  # yes / no answers


def test_no_held_out_paragraph_reaches_training(records, splits):
    held = splits.eval_ids | {e.qid for e in splits.probe}
    held_titles = {t for r in records if r.qid in held for t, _ in r.context}
    held_texts = set(held_out_paragraphs(splits, records))
    assert held_texts
    for example in splits.train:
        for text in paragraphs_of(example):
            assert text not in held_texts
            assert text.split("\n\n")[0] not in held_titles | {"Squadland"}


def test_probe_gold_is_clean_of_eval_paragraphs(records, splits):
    eval_titles = {t for r in records if r.qid in splits.eval_ids for t, _ in r.context}
    for example in splits.probe:
        assert len(example.gold) == 2 and not example.distractors
        assert not {g.split("\n\n")[0] for g in example.gold} & eval_titles


def test_shared_windows_exclude_gold_and_drop_distractors(records, splits):
    holders = {f"q{i}" for i in range(0, 40, 4)}
    assert holders & splits.eval_ids, "the synthetic draw must hold out some boilerplate"
    assert not holders & {e.qid for e in splits.train}
    assert splits.gold_excluded >= len(holders - splits.eval_ids - {e.qid for e in splits.probe})
    assert "q5" not in {e.qid for e in splits.train}  # gold titled like a SQuAD article
    six = [e for e in splits.train if e.qid == "q6"]
    assert not six or all("Squadland" not in d for d in six[0].distractors)
    assert splits.distractors_dropped > 0


def test_gold_in_support_order_whitespace_collapsed(splits):
    by_id = {e.qid: e for e in (*splits.train, *splits.probe)}
    nine = by_id.get("q9") or by_id.get("q15") or by_id.get("q21")
    assert nine is not None
    assert nine.gold[0].startswith("Gold " + nine.qid[1:] + "b\n\n")  # support lists b first
    assert "  " not in nine.gold[0] and nine.gold[0].endswith("enough to matter.")


def test_split_is_deterministic(records, splits):
    again = split_hotpot(
        records, DRAWS, 4, 0, also_excluded=[("Squadland", "Squadland text as SQuAD has it.")]
    )
    assert again.train == splits.train and again.probe == splits.probe
    assert again.eval_ids == splits.eval_ids


def test_excluded_paragraphs_rules():
    excluded = ExcludedParagraphs()
    long = "a sentence that is well over sixty-four characters long, shared by two articles."
    excluded.add("Title A", f"Alpha. {long}")
    assert excluded.excludes("Title A", "anything")  # by title
    assert excluded.excludes("B", f"alpha.  {long.upper()}")  # by normalised text
    assert excluded.excludes("C", f"Gamma, unrelated. {long}")  # by shared window
    assert not excluded.excludes("D", "Delta is a different paragraph altogether, " * 3)
    assert titled("T", " a\u00a0 b\n c ") == "T\n\na b c"

"""QA sets for `eval qa`: SQuAD-style answer scores, SQuAD v2 / HotpotQA loading, the corpus."""

from __future__ import annotations

import os

import pytest

from extok_rag.evaluation.books import EvalDataError
from extok_rag.evaluation.qa_data import (
    QA_SETS,
    QAItem,
    QASet,
    _hotpot_record,
    _unique_names,
    answer_contained,
    load_qa_set,
    normalise_answer,
    slugify,
    token_f1,
    write_corpus,
)


def _load(name: str, n_questions: int, seed: int = 0) -> QASet:
    try:
        return load_qa_set(name, n_questions, seed=seed)
    except EvalDataError as err:
        pytest.skip(f"QA data not available: {err}")


@pytest.fixture(scope="module")
def squad() -> QASet:
    return _load("squad", 300)


@pytest.fixture(scope="module")
def hotpot() -> QASet:
    return _load("hotpotqa", 50)


# -- scores -----------------------------------------------------------------------------------
def test_normalise_answer_drops_case_punctuation_articles_and_spaces():
    assert normalise_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalise_answer("  A cat, an owl and THE dog. ") == "cat owl and dog"
    assert normalise_answer("theory") == "theory"  # "the" only as a whole word
    assert normalise_answer("") == ""


def test_answer_contained_ignores_articles_and_punctuation():
    assert answer_contained("It was the Normans, in France.", ["Normans"])
    assert answer_contained("in 1066 AD", ["the 1066 A.D."])
    assert answer_contained("The answer is: France.", ["france"])
    assert answer_contained("Paris is the capital", ["London", "the capital"])


def test_answer_contained_needs_whole_tokens():
    assert not answer_contained("a category of things", ["cat"])
    assert not answer_contained("anything", ["thing"])
    assert answer_contained("a cat.", ["cat"])
    assert not answer_contained("anything", ["", "the", "..."])  # empty after normalising
    assert not answer_contained("", ["cat"])


def test_token_f1_known_values():
    assert token_f1("the cat sat", ["cat sat"]) == pytest.approx(1.0)
    # pred {cat, sat, down}, gold {cat, sat}: p = 2/3, r = 1 -> 0.8
    assert token_f1("cat sat down", ["a cat sat"]) == pytest.approx(0.8)
    # best over the gold answers
    assert token_f1("blue whale", ["red", "whale"]) == pytest.approx(2 / 3)
    assert token_f1("dog", ["cat"]) == 0.0
    assert token_f1("", ["cat"]) == 0.0
    assert token_f1("cat", []) == 0.0


# -- loading errors ---------------------------------------------------------------------------
def test_unknown_set_raises():
    assert QA_SETS == ("squad", "hotpotqa")
    with pytest.raises(EvalDataError, match="unknown QA set"):
        load_qa_set("nq", 10)


@pytest.mark.parametrize("name", QA_SETS)
def test_bad_question_counts_raise(name):
    _load(name, 1)  # skips when the data cannot be fetched
    for n in (0, -3, 10**6):
        with pytest.raises(EvalDataError, match="n_questions"):
            load_qa_set(name, n)


# -- SQuAD ------------------------------------------------------------------------------------
def test_squad_corpus_is_every_paragraph(squad):
    assert squad.name == "squad"
    assert len(squad.items) == 300
    assert len(squad.paragraphs) == 1204
    assert len({item.qid for item in squad.items}) == 300
    assert "normans/p000.txt" in squad.paragraphs
    assert squad.paragraphs["normans/p000.txt"].startswith("Normans\n\nThe Normans")


def test_squad_gold_paragraph_holds_the_answer(squad):
    for item in squad.items:
        assert item.answers and all(item.answers)
        assert len(item.gold_docs) == 1
        gold = squad.paragraphs[item.gold_docs[0]]
        assert normalise_answer(item.answers[0]) in normalise_answer(gold), item


def test_squad_draw_is_reproducible(squad):
    assert _load("squad", 300, seed=0).items == squad.items
    other = _load("squad", 300, seed=1)
    assert {i.qid for i in other.items} != {i.qid for i in squad.items}


# -- HotpotQA ---------------------------------------------------------------------------------
def test_hotpot_items_and_gold_docs(hotpot):
    assert hotpot.name == "hotpotqa"
    assert len(hotpot.items) == 50
    assert len(hotpot.paragraphs) <= 500
    two_or_more = 0
    for item in hotpot.items:
        assert isinstance(item, QAItem)
        assert normalise_answer(item.answers[0]) not in ("yes", "no")
        assert len(item.gold_docs) >= 1
        assert all(doc in hotpot.paragraphs for doc in item.gold_docs)
        two_or_more += len(item.gold_docs) >= 2
    assert two_or_more >= 0.9 * len(hotpot.items)


def test_hotpot_file_names_are_slugs(hotpot):
    for name, text in hotpot.paragraphs.items():
        assert name.endswith(".txt") and "/" not in name
        assert name == name.lower() and name.isascii()
        title, sep, body = text.partition("\n\n")
        assert sep and title and body


def test_hotpot_draw_is_reproducible(hotpot):
    again = _load("hotpotqa", 50, seed=0)
    assert again.items == hotpot.items and again.paragraphs == hotpot.paragraphs
    assert _load("hotpotqa", 50, seed=3).items != hotpot.items


# -- corpus on disk ---------------------------------------------------------------------------
def test_write_corpus_is_incremental_and_exact(hotpot, tmp_path):
    folder = tmp_path / "corpus"
    assert write_corpus(hotpot, folder) == len(hotpot.paragraphs)
    name, text = next(iter(hotpot.paragraphs.items()))
    assert (folder / name).read_text(encoding="utf-8") == text
    mtime = os.stat(folder / name).st_mtime_ns

    stray = folder / "stray.txt"
    stray.write_text("not in the set")
    (folder / "notes.md").write_text("kept: not a .txt file")
    assert write_corpus(hotpot, folder) == 0
    assert not stray.exists()
    assert (folder / "notes.md").exists()
    assert os.stat(folder / name).st_mtime_ns == mtime
    assert sorted(p.name for p in folder.glob("*.txt")) == sorted(hotpot.paragraphs)


def test_write_corpus_rewrites_changed_files_and_nested_names(tmp_path):
    item = QAItem("q1", "Where?", ("here",), ("a/p000.txt",))
    qa = QASet("squad", (item,), {"a/p000.txt": "A\n\nhere", "b/p000.txt": "B\n\nthere"})
    folder = tmp_path / "corpus"
    assert write_corpus(qa, folder) == 2
    (folder / "a" / "p000.txt").write_text("changed")
    (folder / "c").mkdir()
    (folder / "c" / "p001.txt").write_text("stray")
    assert write_corpus(qa, folder) == 1
    assert (folder / "a" / "p000.txt").read_text(encoding="utf-8") == "A\n\nhere"
    assert not (folder / "c").exists()
    assert not list(folder.rglob("*.tmp"))


# -- naming and parsing -----------------------------------------------------------------------
def test_slugs_and_deterministic_suffixes():
    assert slugify("Fresno,_California") == "fresno-california"
    assert slugify("Küçük Hüseyin Pasha") == "kucuk-huseyin-pasha"
    assert slugify("!!!") == "untitled"
    keys = [("Foo", "b"), ("Foo 2", "x"), ("foo", "a")]
    names = _unique_names(keys)
    assert names == _unique_names(reversed(keys))
    assert names[("Foo 2", "x")] == "foo-2"  # a title's own slug is never taken as a suffix
    assert sorted(names.values()) == ["foo", "foo-2", "foo-3"]


def test_hotpot_record_parses_literal_strings():
    raw = {
        "_id": "h1",
        "question": "Who?",
        "answer": " Ada ",
        "context": "[['Ada', ['Ada was', ' a countess.']], ['Bob', ['Bob.']]]",
        "supporting_facts": "[['Ada', 0], ['Ada', 1], ['Bob', 0]]",
    }
    rec = _hotpot_record(raw)
    assert rec.answer == "Ada"
    assert rec.context == (("Ada", "Ada was a countess."), ("Bob", "Bob."))
    assert rec.support == ("Ada", "Bob")

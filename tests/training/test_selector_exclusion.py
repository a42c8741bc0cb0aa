"""The learned span scorer never trained on an evaluation or probe item: its training
questions (`training.selector.selector_questions`, the real HotpotQA dev file) share no question,
paragraph title or paragraph text with any `eval qa` draw (seeds 0-4, up to 1,000 questions),
the answer probe, or the span probes' draws (`benchmarks/span_probe.py`, `expand_probe.py`:
seed 97), and none of their paragraphs is a SQuAD paragraph."""

from __future__ import annotations

import pytest

from extok_rag.datasets.packages import DatasetError
from extok_rag.datasets.qa_sets import load_qa_set, squad_paragraphs
from extok_rag.datasets.qa_splits import EVAL_DRAWS, answer_probe_items
from extok_rag.training.selector import SPAN_PROBE_DRAWS, selector_questions


def squeezed(text: str) -> str:
    """Lower case, no whitespace at all (training sentences are re-joined with spaces)."""
    return "".join(text.split()).lower()


@pytest.fixture(scope="module")
def training():
    try:
        return selector_questions()
    except DatasetError as err:
        pytest.skip(f"HotpotQA not available: {err}")


@pytest.fixture(scope="module")
def held_out():
    """(question ids, paragraph titles, normalised paragraph texts) of every held-out item."""
    draws = [load_qa_set("hotpotqa", n, seed) for seed, n in (*EVAL_DRAWS, *SPAN_PROBE_DRAWS)]
    ids = {i.qid for qa in draws for i in qa.items}
    paragraphs = {p for qa in draws for p in qa.paragraphs.values()}
    probe = answer_probe_items()
    ids |= {e.qid for e in probe}
    paragraphs |= {p for e in probe for p in e.gold}
    titles = {p.partition("\n\n")[0] for p in paragraphs}
    texts = {squeezed(p.partition("\n\n")[2]) for p in paragraphs}
    return ids, titles, texts


def test_no_training_question_is_held_out(training, held_out):
    ids, _, _ = held_out
    assert len(training) > 1000
    assert not {q.qid for q in training} & ids


def test_no_training_paragraph_is_held_out_or_squad(training, held_out):
    _, titles, texts = held_out
    squad = squad_paragraphs()
    forbidden_titles = titles | {title for title, _ in squad}
    forbidden_texts = texts | {squeezed(text) for _, text in squad}
    for q in training:
        for para in q.paragraphs:
            title = para[0].title
            text = squeezed(" ".join(s.text for s in para))
            assert title not in forbidden_titles, (q.qid, title)
            assert text not in forbidden_texts, (q.qid, title)


def test_the_span_probes_draw_is_held_out(held_out):
    """The probes read questions of draw seed 97 up to 440 (HotpotQA); all are held out."""
    ids, _, _ = held_out
    probe = load_qa_set("hotpotqa", 440, SPAN_PROBE_DRAWS[0][0])
    assert {i.qid for i in probe.items} <= ids

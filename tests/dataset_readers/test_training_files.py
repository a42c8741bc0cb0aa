"""The JSON-lines files of `data prepare`: write, read back, missing files."""

from __future__ import annotations

import json

import pytest

from extok_rag.datasets.packages import DatasetError
from extok_rag.datasets.training_files import (
    ANSWER_PROBE_FILE,
    PARAGRAPHS_TRAIN_FILE,
    QA_TRAIN_FILE,
    QAExample,
    TrainParagraph,
    read_answer_probe,
    read_paragraphs_train,
    read_qa_train,
    training_data_dir,
    write_jsonl,
)


def test_round_trip(tmp_path):
    out = training_data_dir(tmp_path)
    out.mkdir()
    qa = [QAExample("q1", "Who?", "Ada", ("Ada\n\nAda was…",), ("Bob\n\nBob.", "Cy\n\nCy."))]
    probe = [QAExample("q2", "Where?", "Paris", ("Paris\n\nParis is.", "France\n\nFrance."))]
    paragraphs = [TrainParagraph("jargon", "A paragraph.\n\nAnother one.")]
    assert write_jsonl(out / QA_TRAIN_FILE, (e.to_json() for e in qa)) == 1
    write_jsonl(out / ANSWER_PROBE_FILE, (e.to_json(with_distractors=False) for e in probe))
    write_jsonl(out / PARAGRAPHS_TRAIN_FILE, (p.to_json() for p in paragraphs))
    assert read_qa_train(tmp_path) == qa
    assert read_answer_probe(tmp_path) == probe
    assert read_paragraphs_train(tmp_path) == paragraphs
    first = json.loads((out / QA_TRAIN_FILE).read_text(encoding="utf-8"))
    assert set(first) == {"id", "question", "answer", "gold", "distractors"}
    probe_row = json.loads((out / ANSWER_PROBE_FILE).read_text(encoding="utf-8"))
    assert set(probe_row) == {"id", "question", "answer", "gold"}
    assert "…" in (out / QA_TRAIN_FILE).read_text(encoding="utf-8")  # not \\u-escaped
    assert not list(out.glob(".*.tmp"))


def test_missing_or_bad_files_say_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="data prepare"):
        read_qa_train(tmp_path)
    out = training_data_dir(tmp_path)
    out.mkdir()
    (out / PARAGRAPHS_TRAIN_FILE).write_text('{"text": "no source"}\n')
    with pytest.raises(DatasetError, match="not a paragraphs file"):
        read_paragraphs_train(tmp_path)

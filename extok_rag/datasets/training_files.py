"""The JSON-lines files `extok-rag data prepare` writes beside the token shards, and their
readers (so training needs no data package at run time).

In `<data dir>/training-data/`:

- `qa_train.jsonl`: HotpotQA training questions, one object per line
  `{"id", "question", "answer", "gold": ["Title\\n\\ntext", ...], "distractors": [...]}`;
  gold paragraphs in supporting-fact order (typically 2), distractors in context order.
- `answer_probe.jsonl`: the answer probe's held-out questions, same fields without
  `distractors`.
- `paragraphs_train.jsonl`: `{"source", "text"}` per line: paragraphs of 200-1,500 characters
  from the train-split documents of every source (for span-recall and reconstruction).

Every line is one JSON object (UTF-8, `ensure_ascii=False`); files are written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from extok_rag.config import home_dir
from extok_rag.datasets.packages import DatasetError

QA_TRAIN_FILE = "qa_train.jsonl"
ANSWER_PROBE_FILE = "answer_probe.jsonl"
PARAGRAPHS_TRAIN_FILE = "paragraphs_train.jsonl"


def training_data_dir(data_dir: Path | None = None) -> Path:
    """Where `prepare` writes shards and files: `<data_dir>/training-data` (default
    `home_dir()`)."""
    return (data_dir or home_dir()) / "training-data"


@dataclass(frozen=True)
class QAExample:
    """A question with its gold paragraphs and distractors, each "Title\\n\\ntext"."""

    qid: str
    question: str
    answer: str
    gold: tuple[str, ...]
    distractors: tuple[str, ...] = ()

    def to_json(self, with_distractors: bool = True) -> dict:
        row = {"id": self.qid, "question": self.question, "answer": self.answer}
        row["gold"] = list(self.gold)
        if with_distractors:
            row["distractors"] = list(self.distractors)
        return row

    @classmethod
    def from_json(cls, row: dict) -> QAExample:
        return cls(
            str(row["id"]),
            row["question"],
            row["answer"],
            tuple(row["gold"]),
            tuple(row.get("distractors", ())),
        )


@dataclass(frozen=True)
class TrainParagraph:
    """One paragraph of a train-split document and the source it came from."""

    source: str
    text: str

    def to_json(self) -> dict:
        return {"source": self.source, "text": self.text}


# -- writing ----------------------------------------------------------------------------------
def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write one JSON object per line atomically (temp file + rename); return the count."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


# -- reading ----------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict]:
    """Every object of a JSON-lines file; a missing file says to run `data prepare`."""
    if not path.is_file():
        raise DatasetError(f"{path} does not exist: run `extok-rag data prepare` first")
    try:
        with path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {path}: {err}") from err


def read_qa_examples(path: Path) -> list[QAExample]:
    try:
        return [QAExample.from_json(row) for row in read_jsonl(path)]
    except (KeyError, TypeError) as err:
        raise DatasetError(f"{path} is not a QA file: {err!r}") from err


def read_qa_train(data_dir: Path | None = None) -> list[QAExample]:
    """`qa_train.jsonl` of the prepared training data (`data_dir`: as `training_data_dir`)."""
    return read_qa_examples(training_data_dir(data_dir) / QA_TRAIN_FILE)


def read_answer_probe(data_dir: Path | None = None) -> list[QAExample]:
    """`answer_probe.jsonl`: the answer probe's questions (no distractors)."""
    return read_qa_examples(training_data_dir(data_dir) / ANSWER_PROBE_FILE)


def read_paragraphs_train(data_dir: Path | None = None) -> list[TrainParagraph]:
    """`paragraphs_train.jsonl`: train-split paragraphs with their source names."""
    path = training_data_dir(data_dir) / PARAGRAPHS_TRAIN_FILE
    try:
        return [TrainParagraph(row["source"], row["text"]) for row in read_jsonl(path)]
    except (KeyError, TypeError) as err:
        raise DatasetError(f"{path} is not a paragraphs file: {err!r}") from err

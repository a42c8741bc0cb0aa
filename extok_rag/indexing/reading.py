"""Corpus files -> document texts, through LlamaIndex's `SimpleDirectoryReader`.

`SimpleDirectoryReader` walks the tree (recursion, hidden files, extensions, `exclude` globs) and
calls one `BaseReader` per suffix. Its default readers live in `llama-index-readers-file`, which
this project does not install, so the three readers here fill that role: plain text (UTF-8
only, NUL bytes = binary), HTML (the standard library's `html.parser`: visible text only) and
PDF (pypdf's page text). A file that cannot be read raises `UnreadableFile`, which the indexer
turns into one warning line and a skip.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

SUFFIXES = (".txt", ".md", ".rst", ".html", ".htm", ".pdf")
_SNIFF_BYTES = 8192  # a NUL in the first 8 KiB marks a binary file, as git does
# SimpleDirectoryReader logs "llama-index-readers-file not found" on every file, and pypdf logs
# its repairs: our readers replace the first, and a bad file gets one warning line from us.
logging.getLogger("llama_index.core.readers.file.base").setLevel(logging.ERROR)
logging.getLogger("pypdf").setLevel(logging.ERROR)


class UnreadableFile(Exception):
    """A corpus file that yields no text: binary, not UTF-8, corrupt, or unreadable."""


@dataclass(frozen=True)
class SourceFile:
    """A corpus file: `rel` is its POSIX path under the corpus root (the doc_path stored)."""

    path: Path
    rel: str
    doc_hash: str  # sha256 of the file's bytes, 16 hex digits
    size: int


def list_corpus(
    root: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> tuple[list[SourceFile], list[str]]:
    """Supported files under `root` (hidden ones skipped), filtered by globs.

    A glob without "/" matches file names, one with "/" the path under the root (fnmatch: `*`
    crosses folders). Returns (files sorted by path, one warning per file that cannot be read).
    """
    from llama_index.core import SimpleDirectoryReader

    root = Path(root).resolve()  # SimpleDirectoryReader lists absolute paths
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder {root} does not exist")
    try:
        reader = SimpleDirectoryReader(
            input_dir=str(root),
            recursive=True,
            exclude=list(exclude) or None,
            required_exts=list(SUFFIXES),
            exclude_hidden=False,  # it tests every part of the absolute path: see below
        )
        paths = [Path(p) for p in reader.input_files]
    except ValueError:  # "No files found in <dir>."
        paths = []
    files, warnings = [], []
    for path in sorted(paths):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # hidden below the root; a root inside ~/.cache is fine
        if include and not any(_matches(rel, g) for g in include):
            continue
        try:
            data = path.read_bytes()
        except OSError as err:
            warnings.append(f"skipped {rel}: cannot read it ({err.strerror or err})")
            continue
        digest = hashlib.sha256(data).hexdigest()[:16]
        files.append(SourceFile(path, rel, digest, len(data)))
    return files, warnings


def _matches(rel: str, glob: str) -> bool:
    return fnmatch.fnmatch(rel if "/" in glob else rel.rsplit("/", 1)[-1], glob)


def read_text(file: SourceFile) -> str:
    """The text of one corpus file, through SimpleDirectoryReader and the reader for its suffix.
    Raises UnreadableFile (with a short reason) if there is no text to index."""
    from llama_index.core import SimpleDirectoryReader

    try:
        docs = SimpleDirectoryReader.load_file(
            input_file=file.path,
            file_metadata=lambda p: {"file_path": p},
            file_extractor=_readers(),
            raise_on_error=True,
        )
    except Exception as err:  # load_file wraps every reader error in a bare Exception
        cause = err.__cause__ or err
        if isinstance(cause, UnreadableFile):
            raise cause from None
        raise UnreadableFile(f"{type(cause).__name__}: {cause}") from None
    text = "\n\n".join(d.text for d in docs)
    if not text.strip():
        raise UnreadableFile("no text in it")
    return text


def _readers() -> dict:
    """{suffix: BaseReader} for SimpleDirectoryReader (made on first use: llama_index is heavy)."""
    global _READERS
    if _READERS is None:
        from llama_index.core.readers.base import BaseReader
        from llama_index.core.schema import Document

        class TextReader(BaseReader):
            """UTF-8 text (.txt, .md, .rst); NUL bytes mean binary."""

            def load_data(self, file, extra_info=None, **_):
                return [Document(text=decode_text(Path(file).read_bytes()), metadata=extra_info)]

        class HtmlReader(BaseReader):
            """Visible text of an HTML page (scripts and styles dropped)."""

            def load_data(self, file, extra_info=None, **_):
                parser = _VisibleText()
                parser.feed(decode_text(Path(file).read_bytes()))
                parser.close()
                return [Document(text=parser.text(), metadata=extra_info)]

        class PdfReader(BaseReader):
            """Text of every page of a PDF, by pypdf."""

            def load_data(self, file, extra_info=None, **_):
                import pypdf

                try:
                    pages = [p.extract_text() or "" for p in pypdf.PdfReader(file).pages]
                except pypdf.errors.PyPdfError as err:
                    raise UnreadableFile(f"not a readable PDF ({err})") from None
                return [Document(text="\n\n".join(pages), metadata=extra_info)]

        text, html = TextReader(), HtmlReader()
        _READERS = {".txt": text, ".md": text, ".rst": text, ".html": html, ".htm": html}
        _READERS[".pdf"] = PdfReader()
    return _READERS


_READERS: dict | None = None


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM allowed) text from bytes; UnreadableFile for binary or other encodings."""
    if b"\0" in data[:_SNIFF_BYTES]:
        raise UnreadableFile("binary file (NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UnreadableFile(f"not UTF-8 text (byte {err.start}: {err.reason})") from None


class _VisibleText(HTMLParser):
    _HIDDEN = frozenset({"script", "style", "head", "template", "noscript"})
    _BLOCKS = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "tr",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "pre",
            "section",
            "article",
            "table",
            "ul",
            "ol",
            "blockquote",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BLOCKS:
            self._parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self._parts.append("\n")

    def handle_data(self, data):
        if not self._hidden:
            self._parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self._parts).splitlines())
        out, blank = [], False
        for line in lines:
            if line or not blank:
                out.append(line)
            blank = not line
        return "\n".join(out).strip()

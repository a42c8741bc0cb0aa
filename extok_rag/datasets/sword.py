"""SWORD modules (the CrossWire Bible Society's format, Debian `sword-*` packages) as prose.

A module is a configuration file `mods.d/<name>.conf` (a `[Name]` line, then `Key=Value`
lines) and data files in its `DataPath` (relative to the folder above `mods.d`). The
compressed verse-keyed drivers (`ModDrv` zText, zCom, zText4, zCom4) keep per testament
(`ot`, `nt`) three files, all little-endian, named `<t>.<x>zs/zz/zv` where x is the first
letter of `BlockType` (b: a block per book, c: per chapter, v: per verse):

- `<t>.bzs`: one (uint32 offset, uint32 compressed size, uint32 uncompressed size) per block;
- `<t>.bzz`: the blocks, compressed as `CompressType` says (ZIP = zlib, BZIP2, XZ; LZSS is
  not supported);
- `<t>.bzv`: one (uint32 block, uint32 start, uint16 size) per verse slot (uint32 size for
  the "4" drivers; the width is checked against the file), in versification order: module
  header, testament header, then for each book an introduction slot and for each chapter an
  introduction slot followed by its verses. A commentary links the verses of one comment to the
  same (block, start, size): such an entry is read once.

`SourceType` markup (OSIS, ThML or GBF) is stripped to plain text: notes, titles, tables and
similar furniture are dropped with their content, paragraph marks start a new paragraph and
every other tag is removed with its content kept. OSIS `<chapter sID>` and book `<div>`
markers cut the text into sections ("Gen" for a book's introduction, "Gen.1" for a chapter);
the other markups have no such markers, so their sections are the compressed blocks.
"""

from __future__ import annotations

import bz2
import html
import lzma
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from extok_rag.datasets.packages import DatasetError

_DRIVERS = {"ztext": 10, "zcom": 10, "ztext4": 12, "zcom4": 12}  # verse slot width, bytes
_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "ZIP": zlib.decompress,
    "BZIP2": bz2.decompress,
    "XZ": lzma.decompress,
}


class SwordError(DatasetError):
    """A SWORD module cannot be read: unknown driver, compression or a damaged file."""


@dataclass(frozen=True)
class SwordModule:
    """A module's configuration: its name, `Key=Value` entries (first value of a repeated key)
    and data folder."""

    name: str
    conf: dict[str, str]
    data_path: Path

    @classmethod
    def from_conf(cls, path: Path) -> SwordModule:
        """Read `mods.d/<name>.conf`; `DataPath` is relative to the folder above `mods.d`."""
        name, conf = "", {}
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]") and not name:
                name = line[1:-1]
            elif "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                conf.setdefault(key.strip(), value.strip())
        if not name or "DataPath" not in conf:
            raise SwordError(f"{path} is not a SWORD module configuration")
        return cls(name, conf, path.parent.parent / conf["DataPath"].removeprefix("./"))

    @property
    def driver(self) -> str:
        return self.conf.get("ModDrv", "").lower()

    @property
    def source_type(self) -> str:
        return self.conf.get("SourceType", "Plaintext").upper()


# -- raw entries --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Testament:
    blocks: list[tuple[int, int, int]]  # (offset, compressed size, uncompressed size)
    slots: list[tuple[int, int, int]]  # (block, start, size)
    data: bytes


def _read_testament(folder: Path, prefix: str, letter: str, width: int) -> _Testament | None:
    """One testament's index and blocks (None when the module lacks it); the verse-slot width
    is the one whose slots all point inside their blocks."""
    paths = [folder / f"{prefix}.{letter}z{ext}" for ext in "svz"]
    if not all(p.is_file() for p in paths):
        return None
    bzs, bzv, bzz = (p.read_bytes() for p in paths)
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs) - 11, 12)]
    for w in (width, 12 if width == 10 else 10):  # the declared width first
        if len(bzv) % w == 0:
            slots = [
                struct.unpack_from("<IIH" if w == 10 else "<III", bzv, i)
                for i in range(0, len(bzv), w)
            ]
            if all(b < len(blocks) and s + n <= blocks[b][2] for b, s, n in slots if n):
                return _Testament(blocks, slots, bzz)
    raise SwordError(f"{paths[1]} does not match its block index")


def module_entries(module: SwordModule) -> Iterator[tuple[int, str]]:
    """(block number, raw markup) of each distinct non-empty verse slot: Old Testament, then
    New Testament, in versification order. Block numbers count on across testaments."""
    width = _DRIVERS.get(module.driver)
    if width is None:
        raise SwordError(f"{module.name}: driver {module.driver!r} is not supported")
    if module.conf.get("CipherKey"):
        raise SwordError(f"{module.name} is enciphered")
    decompress = _DECOMPRESS.get(module.conf.get("CompressType", "ZIP").upper())
    if decompress is None:
        raise SwordError(f"{module.name}: compression {module.conf['CompressType']} unsupported")
    encoding = "utf-8" if module.conf.get("Encoding", "").upper() == "UTF-8" else "latin-1"
    letter = module.conf.get("BlockType", "CHAPTER")[:1].lower()
    testaments = [_read_testament(module.data_path, t, letter, width) for t in ("ot", "nt")]
    if not any(testaments):
        raise SwordError(f"{module.name}: no ot/nt.{letter}z? files in {module.data_path}")
    base = 0
    for testament in filter(None, testaments):
        yield from _testament_entries(testament, decompress, encoding, base)
        base += len(testament.blocks)


def _testament_entries(
    testament: _Testament, decompress: Callable[[bytes], bytes], encoding: str, base: int
) -> Iterator[tuple[int, str]]:
    """(base + block, markup) per non-empty slot; a slot repeating the previous one's span
    (a linked commentary entry) is skipped."""
    cache: dict[int, bytes] = {}
    previous = None
    for block, start, size in testament.slots:
        if not size or (block, start, size) == previous:
            continue
        previous = (block, start, size)
        if block not in cache:
            cache.clear()  # slots run through the blocks in order: keep one
            offset, length, _ = testament.blocks[block]
            try:
                cache[block] = decompress(testament.data[offset : offset + length])
            except (zlib.error, OSError, lzma.LZMAError, ValueError) as err:
                raise SwordError(f"block {block} cannot be decompressed: {err}") from err
        raw = cache[block][start : start + size]
        yield base + block, raw.decode(encoding, errors="replace").rstrip("\x00")


# -- markup -> text -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Markup:
    breaks: frozenset[str]  # tags (any form) that end a paragraph
    skipped: dict[str, str]  # opening tag -> closing tag: dropped with their content


_MARKUPS = {
    "OSIS": _Markup(
        frozenset({"div", "p", "lg", "lb", "item", "list"}),
        {t: "/" + t for t in ("note", "title", "table", "head", "speaker", "catchWord")},
    ),
    "THML": _Markup(
        frozenset({"div", "p", "br", "li", "ul", "ol"}),
        {t: "/" + t for t in ("note", "h1", "h2", "h3", "h4", "h5", "h6", "table")},
    ),
    "GBF": _Markup(frozenset({"CM", "CL"}), {"RF": "Rf", "TS": "Ts"}),
    "PLAINTEXT": _Markup(frozenset(), {}),
}
_TOKEN = re.compile(r"<[^<>]*>|[^<]+|<")
_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z][\w:.-]*)")
_ATTR = re.compile(r'([\w:]+)="([^"]*)"')
_SPACE_BEFORE_PUNCTUATION = re.compile(r" +([,.;:!?)\]’”])")


@dataclass(frozen=True)
class SwordSection:
    """The prose of one section: a book's introduction ("Gen") or a chapter ("Gen.1");
    "" before the first marker."""

    osis_id: str
    paragraphs: tuple[str, ...]

    @property
    def book(self) -> str:
        return self.osis_id.split(".")[0]


class _SectionBuilder:
    """Collects text into paragraphs and sections while the markup is walked."""

    def __init__(self) -> None:
        self.sections: list[SwordSection] = []
        self._osis_id = ""
        self._paragraphs: list[str] = []
        self._words: list[str] = []

    def text(self, piece: str) -> None:
        self._words.append(piece)

    def paragraph_break(self) -> None:
        text = " ".join("".join(self._words).replace("¶", " ").split())
        text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
        if text:
            self._paragraphs.append(text)
        self._words = []

    def section(self, osis_id: str) -> None:
        self.paragraph_break()
        if self._paragraphs:
            self.sections.append(SwordSection(self._osis_id, tuple(self._paragraphs)))
        self._osis_id, self._paragraphs = osis_id, []


def _marker(name: str, tag: str) -> str | None:
    """The osisID a chapter start or book division marker opens, else None."""
    attrs = dict(_ATTR.findall(tag))
    if name == "chapter" and "sID" in attrs:
        return attrs.get("osisID") or attrs["sID"]
    if name == "div" and attrs.get("type") == "book" and "eID" not in attrs:
        return attrs.get("osisID")
    return None


def _walk(markup: str, rules: _Markup, out: _SectionBuilder, osis: bool) -> None:
    closing: list[str] = []  # closing tags of the skipped elements we are inside
    for token in _TOKEN.findall(markup):
        match = _TAG.match(token)
        if match is None:
            if not closing:
                out.text(html.unescape(token))
            continue
        name = match.group(2)
        key = match.group(1) + name
        self_closing = token.rstrip(">").rstrip().endswith("/")
        if closing:
            if key == closing[-1]:
                closing.pop()
                out.text(" ")  # "God<note>..</note>created": keep the words apart
            elif key in rules.skipped and not self_closing:
                closing.append(rules.skipped[key])
            continue
        if key in rules.skipped and not self_closing:
            closing.append(rules.skipped[key])
        elif osis and (osis_id := _marker(name, token)) is not None:
            out.section(osis_id)
        elif name in rules.breaks and "x-milestone" not in token:
            out.paragraph_break()
        elif name == "l":  # a poetry line: the lines of a stanza run on
            out.text(" ")


def module_sections(module: SwordModule) -> list[SwordSection]:
    """The module's prose, section by section (see the module docstring)."""
    rules = _MARKUPS.get(module.source_type, _MARKUPS["PLAINTEXT"])
    osis = module.source_type == "OSIS"
    out = _SectionBuilder()
    last_block = None
    for block, markup in module_entries(module):
        if not osis and block != last_block:
            out.section(f"block{block}")
        last_block = block
        _walk(markup, rules, out, osis)
        out.text(" ")  # verses and entries run on within a paragraph
    out.section("")
    return out.sections


def find_modules(root: Path) -> list[SwordModule]:
    """Every module configured under `root` (an unpacked package or a SWORD library), sorted
    by conf path: `mods.d/*.conf` anywhere below it."""
    return [SwordModule.from_conf(p) for p in sorted(root.rglob("mods.d/*.conf"))]

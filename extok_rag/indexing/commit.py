"""The end of a run: compaction, the FAISS file, then the manifest, the commit point.

The commit protocol (every step survives `kill -9` between any two of them):

1. Before its first write, a run records what it writes with in `pending.json` (model
   identities, stride, chunking; `resume.py`). Writes go to the latest LanceDB table version.
2. Deletes (changed and removed documents) come first, in one table commit; then new chunks,
   in commits holding *whole* documents only. So at every table version a document is either
   absent or complete, and `doc_hashes()` of the latest version says exactly what is done.
3. At the end (here): the row-id index is made, and once fragments have piled up the table is
   compacted and versions older than the previous manifest's are deleted; the FAISS index is
   rebuilt from the table at its final version V and saved as `vectors-V.faiss` (temp +
   rename); then `manifest.json` (temp + rename) names V and that file. The manifest write
   is the commit point. `pending.json` is removed, and FAISS files older than the previous
   manifest's are deleted.

Readers (`open_index`) read the manifest, open the table *at its version* and its FAISS file,
so they never see a half-done run. A run that finds uncommitted table versions resumes from them
or restores the manifest's version (`resume.open_table`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from extok_rag.indexes import (
    ChunkTable,
    IndexCounts,
    Manifest,
    VectorIndex,
    disk_bytes,
    write_manifest,
)
from extok_rag.indexes.manifest import format_for
from extok_rag.indexing.report import IndexProgress, IndexReport
from extok_rag.indexing.resume import PENDING_NAME
from extok_rag.indexing.settings import IndexSettings, IndexTarget


def commit_index(
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
    write_manifest(index_dir, _manifest(target, counts, version, vector_file, previous))
    (index_dir / PENDING_NAME).unlink(missing_ok=True)
    keep = {vector_file, previous.vector_file if previous else vector_file}
    _remove_old_vector_files(index_dir, keep)
    report.counts = counts
    report.table_version = version
    report.bytes_on_disk = disk_bytes(index_dir)


def _manifest(
    target: IndexTarget,
    counts: IndexCounts,
    version: int,
    vector_file: str,
    previous: Manifest | None,
) -> Manifest:
    """The manifest naming table version `version` and its FAISS file; an update (same
    models) keeps the previous manifest's creation time."""
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
    return manifest


def _remove_old_vector_files(index_dir: Path, keep: set[str]) -> None:
    """FAISS files not in `keep`, and temp files a dead writer left (we hold the lock)."""
    for old in index_dir.glob("vectors-*.faiss"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    for partial in index_dir.glob("vectors-*.faiss.tmp"):
        partial.unlink(missing_ok=True)


def tidy_table(table: ChunkTable, previous: Manifest | None, compact_fragments: int) -> None:
    """Row-id and full-text indexes; once the table has `compact_fragments` fragments, compaction
    and deletion of the versions older than the previous manifest's. A reader pinned to the
    previous commit keeps working (one generation, like the FAISS files), and
    `resume.open_table` can always restore the manifest's version. LanceDB's `optimize` merges
    every fragment under 1M rows, i.e. rewrites the table, hence the threshold: one rewrite per
    several runs, not per run."""
    table.ensure_row_id_index()
    table.ensure_text_index()
    if table.fragments() < compact_fragments:
        return
    keep = table.version
    if previous is not None and table.has_version(previous.table_version):
        keep = previous.table_version
    table.optimize(keep_from=keep)


def _rebuilt(previous: Manifest, target: IndexTarget) -> bool:
    return previous.llm != target.llm or previous.tokenizer != target.tokenizer

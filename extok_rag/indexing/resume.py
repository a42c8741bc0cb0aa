"""Where a run starts from: the committed manifest, `pending.json`, and the writable table.

Before its first write a run records its target in `pending.json`. A later run that finds
table versions no manifest committed resumes from them when `pending.json` names its own
target (no work is lost or duplicated), and otherwise restores the table to the manifest's
version first. See `commit.py` for the whole protocol.
"""

from __future__ import annotations

import json
from pathlib import Path

from extok_rag.config import write_json
from extok_rag.errors import IndexStoreError
from extok_rag.indexes import ChunkTable, Manifest, VectorIndex, read_manifest
from extok_rag.indexes.manifest import manifest_path
from extok_rag.indexes.snapshot import open_committed_table
from extok_rag.indexing.models import IndexModels
from extok_rag.indexing.report import IndexProgress
from extok_rag.indexing.settings import IndexTarget

PENDING_NAME = "pending.json"


def existing_manifest(index_dir: Path, rebuild: bool) -> Manifest | None:
    """The committed manifest; None for a new index, or an unreadable one being rebuilt."""
    if not manifest_path(index_dir).is_file():
        return None
    try:
        return read_manifest(index_dir)
    except IndexStoreError:
        if rebuild:
            return None
        raise


def open_table(
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
    pending = read_pending(index_dir)
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
        return ChunkTable.create(
            index_dir,
            models.embedder_dim,
            models.state_dim,
            encoding=target.state_encoding,
            overwrite=exists,
        )
    open_committed_table(index_dir, manifest)  # the version to fall back to must exist
    table = ChunkTable.open(index_dir)
    if table.version != manifest.table_version and not resumable:
        # Writes no manifest committed, by another target (or unknown): drop them.
        table.restore(int(manifest.table_version))  # type: ignore[arg-type]
        table = ChunkTable.open(index_dir)
    return table


def read_pending(index_dir: Path) -> dict | None:
    path = index_dir / PENDING_NAME
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_pending(index_dir: Path, target: IndexTarget, *, rebuild: bool) -> None:
    """Record `target` as what the uncommitted table versions are written with."""
    pending = read_pending(index_dir)
    if pending is not None and pending["target"] == target.to_dict():
        rebuild = rebuild or bool(pending["rebuild"])  # still finishing an earlier rebuild
    write_json(index_dir / PENDING_NAME, {"target": target.to_dict(), "rebuild": rebuild})


def vectors_loadable(index_dir: Path, manifest: Manifest, progress: IndexProgress) -> bool:
    """Whether the manifest's FAISS file loads; if not, say so: this run rebuilds it."""
    try:
        VectorIndex.load(index_dir / manifest.vector_file)
    except IndexStoreError as exc:
        reason = str(exc).removesuffix("; rebuild it with --rebuild")
        progress.warn(f"{reason.removesuffix('; build the index first')}; rebuilding it")
        return False
    return True

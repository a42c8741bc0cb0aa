"""The index manifest: which models built an index, at which stride, and what it holds.

One JSON file, `<index_dir>/manifest.json`, written atomically. A query refuses an index whose
manifest names another LLM, extensible tokenizer or retrieval embedder than the ones loaded,
because its stored states and vectors would be meaningless to them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

from extok_rag.config import DownscaleMethod, ModelIdentity, write_json
from extok_rag.errors import IncompatibleModelError, IndexStoreError

# 1: float16 states (no `state_encoding` key). 2: `state_encoding` recorded; written only for
# int8 states, so a float16 index stays readable by releases that know version 1 only, and
# those refuse an int8 index instead of misreading its bytes. 3: `downscale` recorded; written
# only for mean-pooled states, which releases that know versions 1-2 would read as strided.
# 4: states before the tokenizer's held-back layer (`downscale` query_pool, stride 1), which
# readers pool by running that layer; releases that know versions 1-3 would read them as
# extensible embeddings.
FORMAT_VERSION = 4
READABLE_FORMATS = (1, 2, 3, 4)
MANIFEST_NAME = "manifest.json"
DOWNSCALE_METHODS = get_args(DownscaleMethod)


def format_for(state_encoding: str, downscale: str = "strided") -> int:
    """The format version a manifest with these states is written with."""
    if downscale == "query_pool":
        return 4
    if downscale != "strided":
        return 3
    return 1 if state_encoding == "float16" else 2


def _now() -> str:
    """UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class IndexCounts:
    """What an index holds: documents, chunks, and LLM tokens over all chunks."""

    documents: int = 0
    chunks: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Manifest:
    """Everything needed to tell whether an index can serve the models loaded now.

    `stride`: the base down-scaling stride at which extensible embeddings are stored (a chunk
    of n tokens keeps ceil(n / stride) states). `chunking`: the chunker's settings, verbatim.
    `table_version`: the chunk-table version this manifest describes (readers open the table
    there); `vector_file`: the FAISS file, in the index folder, built from that version;
    `state_encoding`: how states are stored ("float16" or "int8", see indexes/table.py).
    `downscale`: how the tokenizer's states were pooled to the stride, and how readers pool
    them further ("strided": the last state of each window; "mean": the window's mean;
    "query_pool": the residual stream before the tokenizer's held-back layer at every position,
    which readers run that layer on, `ask/pooling.py`), the method the extensible tokenizer was
    trained with. Indexes made before it was recorded are strided.
    """

    llm: ModelIdentity
    tokenizer: ModelIdentity
    embedder: str
    stride: int
    chunking: dict = field(default_factory=dict)
    counts: IndexCounts = field(default_factory=IndexCounts)
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    format_version: int = 1
    table_version: int | None = None
    vector_file: str = "vectors.faiss"
    state_encoding: str = "float16"
    downscale: str = "strided"

    def with_counts(self, counts: IndexCounts) -> Manifest:
        """A copy holding `counts`, stamped as updated now."""
        return replace(self, counts=counts, updated=_now())

    def __post_init__(self) -> None:
        if self.downscale not in DOWNSCALE_METHODS:
            raise ValueError(f"unknown down-scale method {self.downscale!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        """Parse a manifest dict; KeyError / TypeError / ValueError on a malformed one."""
        return cls(
            llm=ModelIdentity(**data["llm"]),
            tokenizer=ModelIdentity(**data["tokenizer"]),
            embedder=str(data["embedder"]),
            stride=int(data["stride"]),
            chunking=dict(data["chunking"]),
            counts=IndexCounts(**data["counts"]),
            created=str(data["created"]),
            updated=str(data["updated"]),
            format_version=int(data["format_version"]),
            table_version=None if data.get("table_version") is None else int(data["table_version"]),
            vector_file=str(data.get("vector_file", "vectors.faiss")),
            state_encoding=str(data.get("state_encoding", "float16")),
            downscale=str(data.get("downscale", "strided")),
        )


def manifest_path(index_dir: Path) -> Path:
    return Path(index_dir) / MANIFEST_NAME


def write_manifest(index_dir: Path, manifest: Manifest) -> None:
    """Write `<index_dir>/manifest.json` atomically (temp file + rename)."""
    write_json(manifest_path(index_dir), manifest.to_dict())


def read_manifest(index_dir: Path) -> Manifest:
    """Read `<index_dir>/manifest.json`; IndexStoreError if it is missing, corrupt or too new."""
    path = manifest_path(index_dir)
    if not path.is_file():
        raise IndexStoreError(f"no index manifest at {path}; build the index first")
    try:
        data = json.loads(path.read_text())
        manifest = Manifest.from_dict(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexStoreError(f"index manifest {path} is not valid JSON ({exc})") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexStoreError(f"index manifest {path} is malformed ({exc!r})") from exc
    if manifest.format_version not in READABLE_FORMATS:
        raise IndexStoreError(
            f"index manifest {path} has format version {manifest.format_version}; this "
            f"extok-rag reads versions up to {FORMAT_VERSION}; rebuild the index with --rebuild"
        )
    return manifest


def check_compatible(
    manifest: Manifest, *, llm: ModelIdentity, tokenizer: ModelIdentity, embedder: str
) -> None:
    """Raise IncompatibleModelError, naming both sides, if any loaded model differs from the
    one the index was built with (LLM and tokenizer by fingerprint, embedder by name)."""
    mismatches = []
    if manifest.llm.fingerprint != llm.fingerprint:
        mismatches.append(f"LLM {manifest.llm.describe()} in the index vs {llm.describe()} loaded")
    if manifest.tokenizer.fingerprint != tokenizer.fingerprint:
        mismatches.append(
            f"extensible tokenizer {manifest.tokenizer.describe()} in the index vs "
            f"{tokenizer.describe()} loaded"
        )
    if manifest.embedder != embedder:
        mismatches.append(f"embedder '{manifest.embedder}' in the index vs '{embedder}' loaded")
    if mismatches:
        raise IncompatibleModelError(
            "index was built with other models: "
            + "; ".join(mismatches)
            + "; rebuild it with --rebuild"
        )

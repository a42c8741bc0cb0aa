"""What a run indexes with: its settings, their defaults, and the target they resolve to.

`IndexSettings` is what the caller asks (None: the existing index's, else the default);
`IndexTarget` is what the run then writes with (model identities, stride, chunking, state
encoding, down-scale): compared with the manifest, and recorded in `pending.json`.
"""

from __future__ import annotations

from dataclasses import dataclass

from extok_rag.chunking import ChunkingConfig
from extok_rag.config import check_stored_stride
from extok_rag.errors import IncompatibleModelError, IndexStoreError
from extok_rag.indexes import (
    DEFAULT_HNSW_THRESHOLD,
    STATE_ENCODINGS,
    Manifest,
    ModelIdentity,
    check_compatible,
)
from extok_rag.indexing.models import IndexModels

# Base stride 2: half the disk of stride 1 and every even k stays possible at query time,
# which covers the paper's k in {2, 4, 8, 16, 32}; k = 1 (no compression) is what raw tokens
# are for. Bytes per token measured in docs/indexing.md. A tokenizer that pools queries is
# indexed at stride 1 (`resolve_target`).
DEFAULT_STRIDE = 2
# int8 (d + 2 bytes per state: about half of float16's 2·d; see indexes/table.py): on the same
# questions and windows it answered as float16 does (eval qa ×4, both sets: 0 / 0 paired
# differences) within ±0.012% perplexity (Table-1 (d), 2K and 8K); docs/benchmarks.md
# "state-encoding".
DEFAULT_STATE_ENCODING = "int8"
DEFAULT_COMMIT_TOKENS = 65_536  # tokens of whole documents per table commit
# LanceDB fragments (one per table commit) at which a run compacts the table and deletes old
# versions; see commit.tidy_table.
DEFAULT_COMPACT_FRAGMENTS = 8


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


def resolve_chunking(settings: IndexSettings, manifest: Manifest | None) -> ChunkingConfig:
    """The chunking asked for, else the index's, else the default."""
    if settings.chunking:
        return settings.chunking
    return ChunkingConfig.from_dict(manifest.chunking) if manifest else ChunkingConfig()


def resolve_target(
    models: IndexModels, settings: IndexSettings, manifest: Manifest | None
) -> IndexTarget:
    """The target of a run with these settings over the index of `manifest` (None: a new
    one); ValueError / IndexStoreError for a stride or state encoding that cannot be."""
    chunking = resolve_chunking(settings, manifest)
    downscale = models.tokenizer_downscale
    stride = settings.stride or (manifest.stride if manifest else DEFAULT_STRIDE)
    if downscale == "query_pool":  # every position's state (`check_stored_stride`)
        stride = check_stored_stride(downscale, settings.stride or 1)
    encoding = settings.state_encoding or (
        manifest.state_encoding if manifest else DEFAULT_STATE_ENCODING
    )
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if encoding not in STATE_ENCODINGS:
        raise IndexStoreError(
            f"unknown state encoding {encoding!r}; expected one of {', '.join(STATE_ENCODINGS)}"
        )
    return IndexTarget(
        models.llm_identity,
        models.tokenizer_identity,
        models.embedder_identity,
        stride,
        chunking.to_dict(),
        encoding,
        downscale,
    )


def check_settings(manifest: Manifest, target: IndexTarget) -> None:
    """IncompatibleModelError unless the index of `manifest` was built with `target`'s models
    and settings (what a run may add to)."""
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

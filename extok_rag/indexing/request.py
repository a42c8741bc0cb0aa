"""`extok-rag index` as a call: an `IndexRequest` (the command's options, checked), then
`prepare_run`, which fails fast where it can (Ray missing or unreachable, the index busy) before
it loads the LLM, resolves the extensible tokenizer and picks the engine; the `PreparedRun` it
returns runs `build_index`. The command itself only parses options and draws progress.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extok_rag.chunking import ChunkingConfig
from extok_rag.config import RuntimeConfig
from extok_rag.errors import IndexStoreError
from extok_rag.indexes import WriterLock
from extok_rag.indexes.snapshot import INDEXES_DIR
from extok_rag.indexing.build import build_index
from extok_rag.indexing.engine import IndexEngine
from extok_rag.indexing.models import IndexModels
from extok_rag.indexing.ray_engine import RayEngine
from extok_rag.indexing.ray_session import check_ray
from extok_rag.indexing.report import IndexProgress, IndexReport
from extok_rag.indexing.settings import IndexSettings
from extok_rag.models.defaults import resolve_tokenizer

UNTRAINED_NOTE = (
    "no trained checkpoint for this LLM: states come from an untrained extensible tokenizer "
    "(the LLM's first layers), which carries little content"
)
_log = logging.getLogger("extok_rag.indexing")


@dataclass(frozen=True)
class IndexRequest:
    """What `extok-rag index` asks for, by option. Checked when made: ValueError naming the
    options that cannot be, IndexStoreError if `corpus` is no folder."""

    corpus: Path
    index_path: Path | None = None  # None: ./indexes/<name>
    name: str | None = None  # None: the corpus folder's name
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    llm: str | None = None  # an HF causal-LM directory; None: the default LLM
    tokenizer: str | None = None  # a checkpoint or "untrained"; None: the shipped one if it fits
    embedder: Path | None = None  # None: the default embedder
    chunk_tokens: int | None = None  # None (and no splitter): the index's chunking, else default
    stride: int | None = None
    states: str | None = None  # state encoding of a new index: "int8" or "float16"
    splitter: str | None = None  # "tokens" or "sentence"
    batch_tokens: int = IndexSettings.batch_tokens
    device: str = "auto"
    rebuild: bool = False
    dry_run: bool = False
    engine: str = "local"  # or "ray"
    address: str | None = None  # Ray cluster; None: a local instance
    workers: int | None = None  # Ray encoder actors

    def __post_init__(self) -> None:
        if not self.corpus.is_dir():
            raise IndexStoreError(f"corpus folder {self.corpus} does not exist")
        if self.states not in (None, "float16", "int8"):
            raise ValueError("--states must be 'float16' or 'int8'")
        if self.engine not in ("local", "ray"):
            raise ValueError("--engine must be 'local' or 'ray'")
        if self.engine == "local" and (self.address is not None or self.workers is not None):
            raise ValueError("--address and --workers are options of --engine ray")
        if self.splitter not in (None, "tokens", "sentence"):
            raise ValueError("--splitter must be 'tokens' or 'sentence'")

    @property
    def index_dir(self) -> Path:
        return self.index_path or INDEXES_DIR / (self.name or self.corpus.resolve().name)

    @property
    def uses_ray(self) -> bool:
        """Whether the run writes on Ray (a dry run only reads and chunks, here)."""
        return self.engine == "ray" and not self.dry_run

    @property
    def settings(self) -> IndexSettings:
        chunking = None
        if self.chunk_tokens is not None or self.splitter is not None:
            chunk_tokens = self.chunk_tokens or ChunkingConfig.chunk_tokens
            chunking = ChunkingConfig(chunk_tokens, self.splitter or "tokens")
        return IndexSettings(
            chunking=chunking,
            stride=self.stride,
            state_encoding=self.states,
            include=self.include,
            exclude=self.exclude,
            batch_tokens=self.batch_tokens,
        )


@dataclass(frozen=True)
class PreparedRun:
    """A run ready to go (the LLM loaded, the engine chosen): call it with a progress."""

    corpus: Path
    index_dir: Path
    models: IndexModels
    settings: IndexSettings
    engine: IndexEngine | None  # None: the local engine
    rebuild: bool
    dry_run: bool

    def __call__(self, progress: IndexProgress | None = None) -> IndexReport:
        return build_index(
            self.corpus,
            self.index_dir,
            self.models,
            self.settings,
            rebuild=self.rebuild,
            dry_run=self.dry_run,
            progress=progress,
            engine=self.engine,
        )


def prepare_run(
    request: IndexRequest,
    *,
    load_llm: Callable | None = None,
    note: Callable[[str], None] | None = None,
) -> PreparedRun:
    """The run `request` asks for. Ray missing or unreachable and a busy index are one error
    each before the models load. `load_llm(spec, runtime)` loads the LLM (default
    `FrozenLLM.load`; the CLI's shows a status line); `note` gets a notice line (default: a
    warning on the `extok_rag.indexing` logger)."""
    if request.uses_ray:
        check_ray(request.address)
    index_dir = request.index_dir
    if not request.dry_run and index_dir.is_dir():
        with WriterLock(index_dir):  # a probe: IndexBusyError now if another run writes it
            pass
    models = _load_models(request, load_llm or _load_frozen_llm, note or _log.warning)
    engine = None
    if request.uses_ray:
        engine = RayEngine.for_models(
            request.llm,
            models.tokenizer_path,
            request.embedder,
            address=request.address,
            workers=request.workers,
            device=request.device,
        )
    return PreparedRun(
        request.corpus,
        index_dir,
        models,
        request.settings,
        engine,
        rebuild=request.rebuild,
        dry_run=request.dry_run,
    )


def _load_models(
    request: IndexRequest, load_llm: Callable, note: Callable[[str], None]
) -> IndexModels:
    # The Ray engine's driver only chunks and plans: its LLM (tokenizer, identity) stays on CPU.
    device = "cpu" if request.engine == "ray" else request.device
    frozen = load_llm(request.llm, RuntimeConfig(device=device))
    tokenizer_path = resolve_tokenizer(request.tokenizer, frozen.identity)
    if tokenizer_path is None:
        note(UNTRAINED_NOTE)
    return IndexModels(frozen, tokenizer_path, request.embedder)


def _load_frozen_llm(spec: str | None, runtime: RuntimeConfig):
    from extok_rag.models.llm import FrozenLLM

    return FrozenLLM.load(spec, runtime)

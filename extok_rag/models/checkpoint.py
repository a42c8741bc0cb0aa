"""The on-disk form of an extensible-tokenizer checkpoint: file names, format version, and the
config reader that refuses a checkpoint made for another LLM. No model code: `defaults` and the
indexer read checkpoints' configs without building a tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from extok_rag.config import ModelIdentity
from extok_rag.errors import CheckpointError, IncompatibleModelError

FORMAT_VERSION = 1
WEIGHTS_FILE = "tokenizer.safetensors"
CONFIG_FILE = "tokenizer_config.json"


def read_checkpoint_config(path: Path, llm_identity: ModelIdentity | None = None) -> dict:
    """A checkpoint's JSON config; with `llm_identity`, refuse a checkpoint for another LLM."""
    file = path / CONFIG_FILE
    if not file.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{path} is not an extensible-tokenizer checkpoint")
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file} is not valid JSON: {err}") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{file}: unsupported format {meta.get('format_version')}")
    trained_for = ModelIdentity.from_dict(meta["llm"])
    if llm_identity is not None and not trained_for.matches(llm_identity):
        raise IncompatibleModelError(
            f"tokenizer {path} was trained for LLM {trained_for.name} "
            f"({trained_for.fingerprint}), not {llm_identity.name} ({llm_identity.fingerprint})"
        )
    return meta

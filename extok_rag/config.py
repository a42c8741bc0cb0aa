"""Typed settings (litgpt style): one dataclass per concern, one source of truth per default."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

DownscaleMethod = Literal["strided", "mean"]
AdapterKind = Literal["none", "rmsnorm_linear"]

DEFAULT_LLM_NAME = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDER_NAME = "all-MiniLM-L6-v2"


def home_dir() -> Path:
    """Data dir for caches and checkpoints: `$EXTOK_RAG_HOME`, else ~/.cache/extok-rag."""
    env = os.environ.get("EXTOK_RAG_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "extok-rag"


@dataclass(frozen=True)
class AdapterConfig:
    """Output adapter between the tokenizer's last layer and the LLM's input space.

    `rmsnorm_linear`: optional fixed per-dimension standardisation (statistics set by training),
    then RMSNorm with weight `norm_scale`, then Linear(d, d) initialised to identity.
    """

    kind: AdapterKind = "none"
    standardize: bool = False
    norm_scale: float = 1.0


@dataclass(frozen=True)
class TokenizerConfig:
    """Shape of an extensible tokenizer built from the first `num_layers` of the LLM."""

    num_layers: int = 8
    adapter: AdapterConfig = field(default_factory=AdapterConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerConfig:
        adapter = AdapterConfig(**data.get("adapter", {}))
        return cls(num_layers=int(data["num_layers"]), adapter=adapter)


@dataclass(frozen=True)
class RuntimeConfig:
    """Where models run: device ("auto" picks CUDA when present) and dtype."""

    device: str = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"

    def resolve_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolve_dtype(self) -> str:
        """bf16 by default: ≈3× the fp32 speed of SmolLM2 on this CPU class, and native on GPUs."""
        return "bfloat16" if self.dtype == "auto" else self.dtype


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. `temperature == 0` is greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

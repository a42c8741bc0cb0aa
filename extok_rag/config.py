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


@dataclass(frozen=True)
class ModelIdentity:
    """A model by name (or path) and fingerprint; two models match when fingerprints match.

    Checkpoints and indexes record the identities of the models they were made with."""

    name: str
    fingerprint: str

    def matches(self, other: ModelIdentity) -> bool:
        return self.fingerprint == other.fingerprint

    def describe(self) -> str:
        return f"'{self.name}' (fingerprint {self.fingerprint})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelIdentity:
        return cls(name=str(data["name"]), fingerprint=str(data["fingerprint"]))


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
    lora_rank: int = 0  # >0: LoRA adapters on every attention/MLP linear of the layers
    lora_alpha: float = 32.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerConfig:
        adapter = AdapterConfig(**data.get("adapter", {}))
        rest = {k: v for k, v in data.items() if k in ("lora_rank", "lora_alpha")}
        return cls(num_layers=int(data["num_layers"]), adapter=adapter, **rest)


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


Objective = Literal["ar", "reconstruction"]


@dataclass(frozen=True)
class TrainConfig:
    """Two-stream AR training of an extensible tokenizer (paper §2.2) and the study's options.

    A packed sequence of `seq_len` tokens is cut into `seq_len // chunk_len` chunks. Pass 1
    encodes every chunk on its own; pass 2 predicts chunk i's tokens from the down-scaled
    embeddings of chunks < i plus its own preceding raw tokens (objective "ar"), or from its
    *own* embeddings (objective "reconstruction", a warm-up whose loss depends wholly on them).
    """

    data_dir: str = ""  # packed shards (train.bin, val.bin, meta.json); "" = the data dir
    out_dir: str = ""  # checkpoints and log; "" = <home>/runs/<name>
    name: str = "run"
    tokenizer: TokenizerConfig = field(
        default_factory=lambda: TokenizerConfig(
            num_layers=8, adapter=AdapterConfig("rmsnorm_linear", standardize=True)
        )
    )
    seq_len: int = 1024
    chunk_len: int = 256
    k_choices: tuple[int, ...] = (2, 4, 8, 16, 32)
    downscale: DownscaleMethod = "strided"
    objective: Objective = "ar"
    reconstruction_steps: int = 0  # warm-up steps of the reconstruction objective, then "ar"
    loss_first_tokens: int = 0  # >0: loss only on the first m tokens of each predicted chunk
    train_mode: Literal["lora", "full", "adapter"] = "lora"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lr: float = 5e-4  # encoder (LoRA or full layers)
    adapter_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_steps: int = 200  # optimiser steps
    max_minutes: float = 0.0  # >0: also stop once training time (probes excluded) reaches it
    grad_accum: int = 4  # sequences per optimiser step
    clip: float = 1.0
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    stats_sequences: int = 16  # sequences used to fix the adapter's standardisation
    adapter_init: Literal["identity", "regression"] = "identity"  # regression: least squares
    # from each state to the LLM's embedding of the token at its position (a readable start)
    probe_every: int = 25  # optimiser steps between content probes (0 = never)
    probe_at_start: bool = True  # also probe the untrained tokenizer (step 0)
    probe_sequences: int = 8
    checkpoint_every: int = 10
    seed: int = 0
    dtype: Literal["bfloat16", "float32"] = "bfloat16"  # autocast dtype (frozen LLM weights too)

    @property
    def chunks_per_sequence(self) -> int:
        return self.seq_len // self.chunk_len

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        tok = data.pop("tokenizer", None)
        if "k_choices" in data:
            data["k_choices"] = tuple(data["k_choices"])
        cfg = cls(**data)
        if tok is not None:
            from dataclasses import replace

            cfg = replace(cfg, tokenizer=TokenizerConfig.from_dict(tok))
        return cfg


AskMode = Literal["compressed", "raw", "hybrid", "none"]
AUTO_K_CHOICES = (2, 4, 8, 16, 32)  # the paper's set; "auto" picks the smallest that fits


@dataclass(frozen=True)
class AskConfig:
    """How retrieved chunks reach the frozen LLM.

    compressed: every chunk as extensible embeddings at k; raw: every chunk's text; hybrid: the
    best chunk raw, the rest compressed; none: no retrieval. `k=None` is "auto": the smallest
    k in AUTO_K_CHOICES (a multiple of the index stride) that fits the LLM window.
    """

    top_n: int = 4
    k: int | None = None
    mode: AskMode = "compressed"
    source_lines: bool = False  # head each chunk with a short raw line naming its document

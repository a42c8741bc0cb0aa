"""The learned span scorer: a small MLP over what MiniLM's (question, sentence) vectors and the
words say about each span in its prompt, trained on HotpotQA supporting-fact sentences
(`training.selector`).

In the spirit of RECOMP's extractive compressor (Xu et al., 2023) and Provence (Chirkova et al.,
2025), which train small pruners on QA supervision; here the encoder stays the frozen retrieval
MiniLM, so scoring costs what the `both` scorer costs plus a tiny MLP.

    features (n, F) -> standardise (mean, std) -> Linear(F, H) -> GELU -> Linear(H, 1) -> (n,)

F = len(spans.SELECTOR_SCALARS): cosines, lexical overlap, place in the chunk, first-hop bridge
and answer-type cues, built by `extok_rag.spans.learned_features` (the one function training
and the read side share). The checkpoint ships in `extok_rag/checkpoints/`:
`selector.safetensors` (weights and standardisation), `selector_config.json` (sizes, feature
names, embedder) and a card (README.md).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from extok_rag.errors import IncompatibleModelError, ModelNotFoundError

DEFAULT_SELECTOR_DIR = (
    Path(__file__).resolve().parent.parent / "checkpoints" / "span-selector-minilm"
)
SELECTOR_ENV = "EXTOK_RAG_SELECTOR"  # another selector directory (tests, experiments)
WEIGHTS, CONFIG = "selector.safetensors", "selector_config.json"


@dataclass(frozen=True)
class SelectorConfig:
    scalars: tuple[str, ...]  # spans.SELECTOR_SCALARS at training time
    hidden: int = 128
    dropout: float = 0.1  # training only
    embedder: str = "all-MiniLM-L6-v2"  # the embedder whose cosines it was trained on

    @property
    def n_features(self) -> int:
        return len(self.scalars)


class SentenceSelector(nn.Module):
    """Feature rows -> one logit each. Build with `load`, or fresh for training."""

    def __init__(self, cfg: SelectorConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.n_features))
        self.register_buffer("std", torch.ones(cfg.n_features))
        self.hidden = nn.Linear(cfg.n_features, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop((x - self.mean) / self.std)  # (n, F)
        return self.out(self.drop(nn.functional.gelu(self.hidden(x)))).squeeze(-1)  # (n,)

    @torch.inference_mode()
    def score(self, features: np.ndarray) -> np.ndarray:
        """(n, F) float32 -> (n,) float64 logits."""
        if features.shape[1] != self.cfg.n_features:
            raise IncompatibleModelError(
                f"the span selector takes {self.cfg.n_features} features, got {features.shape[1]}"
            )
        return self(torch.from_numpy(features)).double().numpy()

    def save(self, folder: Path, meta: dict | None = None) -> None:
        """Weights as safetensors, sizes and `meta` (how it was trained) as JSON."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(folder / WEIGHTS))
        config = {**asdict(self.cfg), "scalars": list(self.cfg.scalars), "training": meta or {}}
        (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> SentenceSelector:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
            raise ModelNotFoundError(f"no span selector in {folder} ({WEIGHTS}, {CONFIG})")
        raw = json.loads((folder / CONFIG).read_text())
        fields = {k: raw[k] for k in ("hidden", "dropout", "embedder")}
        cfg = SelectorConfig(scalars=tuple(raw["scalars"]), **fields)
        model = cls(cfg)
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
        return model.eval().requires_grad_(False)


def selector_dir() -> Path:
    """`$EXTOK_RAG_SELECTOR` when set, else the shipped checkpoint."""
    return Path(os.environ.get(SELECTOR_ENV) or DEFAULT_SELECTOR_DIR)


def default_selector() -> SentenceSelector:
    return _load_cached(selector_dir())


@functools.lru_cache(maxsize=2)
def _load_cached(folder: Path) -> SentenceSelector:
    return SentenceSelector.load(folder)

"""The retrieval embedder: all-MiniLM-L6-v2 (a 6-layer BERT) read straight from its directory.

Same output as sentence-transformers' pipeline for this model (modules.json: Transformer ->
mean Pooling -> Normalize): token states averaged over the attention mask, then L2-normalised,
inputs truncated at `max_seq_length` (256 word pieces, from sentence_bert_config.json).
We run the bare `BertModel` instead of importing sentence-transformers: one dependency fewer,
and the batching (sorted by length, bf16 on CPU) is ours.

    texts -> word pieces (B, T) -> BertModel -> (B, T, 384) -> masked mean -> L2 norm -> (B, 384)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from extok_rag.config import RuntimeConfig
from extok_rag.errors import ModelNotFoundError
from extok_rag.models.quiet import quiet_loading

DEFAULT_MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's sentence_bert_config.json
DEFAULT_BATCH_TOKENS = 16_384  # padded word pieces per forward pass
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def weights_fingerprint(path: Path) -> str:
    """sha256 (16 hex digits) of a model directory's weight files, in name order."""
    files = sorted(Path(path).glob("*.safetensors")) or sorted(Path(path).glob("*.bin"))
    if not files:
        raise ModelNotFoundError(f"{path} holds no weight files (*.safetensors or *.bin)")
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


class Embedder:
    """Sentence vectors from a BERT-style encoder directory. Build with `load`."""

    def __init__(self, model, tokenizer, name: str, path: Path, max_seq_length: int):
        self.model = model  # transformers BertModel, eval, no grad
        self.tokenizer = tokenizer
        self.name = name
        self.path = Path(path)
        self.max_seq_length = max_seq_length

    @classmethod
    def load(cls, path: str | Path | None = None, runtime: RuntimeConfig | None = None) -> Embedder:
        """Load the default all-MiniLM-L6-v2 (`path=None`) or another encoder directory."""
        from transformers import AutoModel, AutoTokenizer

        from extok_rag.models.defaults import resolve_embedder

        runtime = runtime or RuntimeConfig()
        resolved = resolve_embedder() if path is None else None
        model_dir = resolved.path if resolved else Path(path).expanduser().resolve()
        name = resolved.name if resolved else model_dir.name
        if not (model_dir / "config.json").is_file():
            raise ModelNotFoundError(f"embedder {model_dir}: no config.json there")
        try:
            with quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
                model = AutoModel.from_pretrained(
                    model_dir, dtype=_DTYPES[runtime.resolve_dtype()], local_files_only=True
                )
        except (OSError, ValueError) as err:
            raise ModelNotFoundError(f"cannot load embedder from {model_dir}: {err}") from err
        model.to(runtime.resolve_device()).eval().requires_grad_(False)
        return cls(model, tokenizer, name, model_dir, _max_seq_length(model_dir, model))

    @cached_property
    def identity(self) -> str:
        """Name and weights fingerprint, e.g. 'all-MiniLM-L6-v2:1a2b...'."""
        return embedder_identity(self.path, self.name)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text, with [CLS]/[SEP], before truncation."""
        ids = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        return [len(i) for i in ids]

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS) -> np.ndarray:
        """(n,) texts -> (n, dim) float32 unit vectors.

        Texts are sorted by length and batched so a batch holds about `batch_tokens` padded
        word pieces: similar lengths share a batch, so little compute goes to padding.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_seq_length, add_special_tokens=True
        )["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
        for batch in length_batches([len(enc[i]) for i in order], batch_tokens):
            rows = [order[j] for j in batch]
            out[rows] = self._forward([enc[i] for i in rows])
        return out

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        T = max(len(i) for i in ids)
        input_ids = torch.full((len(ids), T), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros(len(ids), T, dtype=torch.long)
        for row, piece in enumerate(ids):
            input_ids[row, : len(piece)] = torch.tensor(piece)
            mask[row, : len(piece)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        states = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        pooled = mean_pool(states.float(), mask)  # (B, dim), pooled in fp32
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d) states, (B, T) mask -> (B, d): the mean over unmasked positions."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def length_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Split positions 0..n-1 of *ascending* `lengths` into consecutive batches whose padded
    size (rows x longest) stays within `batch_tokens` (a single over-long row is its own)."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i, length in enumerate(lengths):
        if current and (len(current) + 1) * max(length, 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def embedder_identity(path: Path, name: str) -> str:
    """What the index manifest records for an embedder: name + weights fingerprint."""
    return f"{name}:{weights_fingerprint(path)}"


def _max_seq_length(model_dir: Path, model) -> int:
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))
    return min(DEFAULT_MAX_SEQ_LENGTH, int(model.config.max_position_embeddings))

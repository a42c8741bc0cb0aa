"""The extensible tokenizer (Extensible Tokenization, arXiv 2401.07793, §2).

A small LM — its own copy of the downstream LLM's token embeddings, rotary embedding and first N
decoder layers — encodes each chunk on its own (no attention across chunks) into one output
state per token. `downscale` keeps one state per k positions: these are the chunk's
*extensible embeddings*, read by the frozen LLM in place of its raw tokens.

    chunk ids (L,) -> embed -> N decoder layers -> adapter -> states (L, d) -> downscale(k)
                                                                              -> (ceil(L/k), d)

Down-scaling is parameter-free (`strided`, `mean`) or learned (`merge`: a tree of pair merges,
one level per factor of 2, each the pair mean plus a learned correction started at zero;
`query_pool`: the last layer held back and run on k-windows by pooled queries, `query_pool.py`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from extok_rag import __version__
from extok_rag.config import (
    LEARNED_DOWNSCALES,
    AdapterConfig,
    DownscaleMethod,
    ModelIdentity,
    TokenizerConfig,
    check_stored_stride,
    write_json,
)
from extok_rag.errors import CheckpointError, IncompatibleModelError
from extok_rag.models.checkpoint import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    read_checkpoint_config,
)
from extok_rag.models.defaults import resolve_tokenizer
from extok_rag.models.length_groups import batch_overhead, length_groups
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.lora import add_lora, merge_lora
from extok_rag.models.mixed_input import causal_padding_mask
from extok_rag.models.query_pool import hold_back_last_layer, query_pool, window_mean
from extok_rag.models.transfer import to_device

MERGE_LEVELS = 5  # a learned merge tree serves k = 2, 4, ..., 32


# -- down-scaling ---------------------------------------------------------------------------
def downscale_indices(length: int, k: int) -> torch.Tensor:
    """Positions kept by strided sampling: the last of every k, i.e. k-1, 2k-1, ... (0-based).

    When `length` is not a multiple of k, the chunk's final state is kept too, so the tail is
    never dropped: a chunk of L tokens always gives ceil(L / k) embeddings.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    idx = torch.arange(k - 1, max(length, k - 1), k)
    if length % k:
        idx = torch.cat([idx, torch.tensor([length - 1])])
    return idx


def downscale(states: torch.Tensor, k: int, method: DownscaleMethod = "strided") -> torch.Tensor:
    """Down-scale states (..., L, d) to (..., ceil(L/k), d).

    strided: the state at the last position of each k-window (the paper's choice).
    mean: the mean state of each k-window (the last window may be shorter).
    """
    L = states.shape[-2]
    if method == "strided":
        return states[..., downscale_indices(L, k).to(states.device), :]
    if method == "mean":
        return window_mean(states, k)
    if method in LEARNED_DOWNSCALES:
        raise ValueError(f"{method} down-scaling has weights: use ExtensibleTokenizer.downscale")
    raise ValueError(f"unknown down-scale method {method!r}")


class PairMerge(nn.Module):
    """One level of a merge tree: each pair of states (a, b) -> (a + b) / 2 + W [a; b].

    W (d, 2d) starts at zero, so an untrained level is mean pooling of the pair; unlike the
    mean it can tell the two slots apart (order within the window). An odd last state passes
    through unchanged.
    """

    def __init__(self, d: int):
        super().__init__()
        self.proj = nn.Linear(2 * d, d, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., L, d) -> (..., ceil(L/2), d)
        n = h.shape[-2] // 2
        pairs = h[..., : 2 * n, :].unflatten(-2, (n, 2))  # (..., n, 2, d)
        merged = pairs.mean(dim=-2) + self.proj(pairs.flatten(-2))  # (..., n, d)
        return torch.cat([merged, h[..., 2 * n :, :]], dim=-2)


class MergeTree(nn.Module):
    """Learned down-scaling by k = 2^m: m pair-merge levels, each with its own weights.
    At initialisation it equals mean pooling for chunk lengths that k divides."""

    def __init__(self, d: int, levels: int = MERGE_LEVELS):
        super().__init__()
        self.levels = nn.ModuleList(PairMerge(d) for _ in range(levels))

    def forward(self, h: torch.Tensor, k: int) -> torch.Tensor:  # (..., L, d) -> (..., L/k, d)
        m = k.bit_length() - 1
        if k < 1 or 1 << m != k or m > len(self.levels):
            raise ValueError(f"merge down-scaling serves k = 1, 2, 4, ... {1 << len(self.levels)}")
        for level in self.levels[:m]:
            h = level(h)
        return h


# -- output adapter -------------------------------------------------------------------------
class OutputAdapter(nn.Module):
    """Maps tokenizer states (..., d) into the LLM's input-embedding space.

    Fixed per-dimension standardisation (buffers, set from data by training; it tames the few
    massive dimensions of mid-layer residual streams), RMSNorm, then Linear init'd to identity;
    `rmsnorm_linear2` adds a second Linear (identity at first) with no activation between.
    """

    def __init__(self, d: int, cfg: AdapterConfig, eps: float = 1e-6):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))
        self.norm = nn.RMSNorm(d, eps=eps)
        self.proj = nn.Linear(d, d, bias=False)
        self.proj2 = nn.Linear(d, d, bias=False) if cfg.kind == "rmsnorm_linear2" else None
        with torch.no_grad():
            self.norm.weight.fill_(cfg.norm_scale)
            self.proj.weight.copy_(torch.eye(d))
            if self.proj2 is not None:
                self.proj2.weight.copy_(torch.eye(d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., d) -> (..., d)
        if self.cfg.standardize:
            h = (h - self.mean) / self.std
        h = self.proj(self.norm(h))
        return self.proj2(h) if self.proj2 is not None else h


# -- the tokenizer --------------------------------------------------------------------------
class ExtensibleTokenizer(nn.Module):
    def __init__(self, encoder: nn.Module, config: TokenizerConfig, llm_identity: ModelIdentity):
        super().__init__()
        self.encoder = encoder  # HF base model: embeddings, rotary, N layers, no final norm
        self.config = config
        self.llm_identity = llm_identity
        d = encoder.config.hidden_size
        eps = getattr(encoder.config, "rms_norm_eps", 1e-6)
        self.adapter = (
            OutputAdapter(d, config.adapter, eps) if config.adapter.kind != "none" else None
        )
        self.merge = MergeTree(d) if config.downscale == "merge" else None

    @classmethod
    def from_llm(cls, llm: FrozenLLM, config: TokenizerConfig | None = None):
        """A fresh (untrained) tokenizer: copies of the LLM's embeddings and first N layers.

        With no config: the default depth (8, the paper's choice), or the LLM's own if smaller.
        """
        from transformers import AutoModel

        n_layers = int(llm.config.num_hidden_layers)
        config = config or TokenizerConfig(num_layers=min(TokenizerConfig.num_layers, n_layers))
        if not 0 <= config.num_layers <= n_layers:
            raise ValueError(f"num_layers must be in [0, {n_layers}], got {config.num_layers}")
        enc_cfg = truncated_config(llm.config, config.num_layers)
        encoder = AutoModel.from_config(enc_cfg, dtype=llm.dtype)
        source = llm.model.get_decoder().state_dict()
        missing = encoder.load_state_dict(
            {k: v for k, v in source.items() if k in encoder.state_dict()}, strict=False
        ).missing_keys
        if [k for k in missing if "rotary" not in k]:
            raise IncompatibleModelError(f"cannot copy LLM layers, missing {missing[:3]}")
        encoder.norm = nn.Identity()  # output the residual stream; the adapter normalises
        if config.lora_rank > 0:
            add_lora(encoder, config.lora_rank, config.lora_alpha)
        if config.downscale == "query_pool":
            hold_back_last_layer(encoder)  # its forward stops one layer short; `downscale` runs it
        tokenizer = cls(encoder, config, llm.identity).to(llm.device, llm.dtype)
        return tokenizer.train(False).requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def pools_queries(self) -> bool:
        return self.config.downscale == "query_pool"

    def check_pools_queries(self) -> None:
        if not self.pools_queries:
            raise ValueError("this tokenizer does not hold back a layer to pool queries")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(B, L) ids, right-padded -> (B, L, d) output states (padding rows are junk). The
        mask: (B, L), (B, 1, L, L) (`causal_padding_mask`) or None (no padding). With query
        pooling: the residual stream before the held-back layer, which `downscale` runs."""
        h = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        return h if self.pools_queries else self.adapt(h)

    def adapt(self, h: torch.Tensor) -> torch.Tensor:
        return self.adapter(h) if self.adapter is not None else h

    def unadapted_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(N, L) ids, unpadded -> (N, L, d): every position's state before the output
        adapter (with query pooling: the held-back layer at k = 1). The adapter's fits read
        these."""
        h = self.encoder(input_ids=input_ids, use_cache=False).last_hidden_state
        return query_pool(self.encoder, h, 1) if self.pools_queries else h

    def encode(
        self, chunks: Sequence[torch.Tensor], overhead: int | None = None
    ) -> list[torch.Tensor]:
        """Encode chunks (each (L_i,) ids), each on its own: (L_i, d) each, in the chunks'
        order. They run in a few padded batches of similar length (`length_groups`; `overhead`:
        a batch's cost in positions, by default the device's): a training batch mixes
        paragraphs of 20-256 tokens."""
        lengths = [int(c.numel()) for c in chunks]
        out: list[torch.Tensor] = [torch.empty(0)] * len(chunks)
        if overhead is None:
            overhead = batch_overhead(self.device)
        for group in length_groups(lengths, overhead):
            T = max(lengths[i] for i in group)
            ids = torch.zeros(len(group), T, dtype=torch.long)
            mask = torch.zeros(len(group), T, dtype=torch.long)
            for row, i in enumerate(group):
                ids[row, : lengths[i]] = chunks[i]
                mask[row, : lengths[i]] = 1
            # no mask for a group of one length; else the 4D mask, made on the device
            # (`causal_padding_mask`: from the 2D one transformers checks on the host)
            padded = min(lengths[i] for i in group) < T
            mask = causal_padding_mask(to_device(mask, self.device)) if padded else None
            states = self(to_device(ids, self.device), mask)  # (G, T, d)
            for row, i in enumerate(group):
                out[i] = states[row, : lengths[i]]
        return out

    def downscale(
        self, states: torch.Tensor, k: int, method: DownscaleMethod | None = None
    ) -> torch.Tensor:
        """(..., L, d) -> (..., ceil(L/k), d), by default the way this tokenizer was trained."""
        return self.downscale_from(states, 0, k, method)

    def downscale_from(
        self, states: torch.Tensor, start: int, k: int, method: DownscaleMethod | None = None
    ) -> torch.Tensor:
        """states[..., start:, :] down-scaled: (..., ceil((L - start)/k), d). Only query
        pooling reads the states before `start` (its keys: the whole chunk up to each window)."""
        method = method or self.config.downscale
        if method == "query_pool":
            self.check_pools_queries()
            return self.adapt(query_pool(self.encoder, states, k, start))
        states = states[..., start:, :]
        if method != "merge":
            return downscale(states, k, method)
        if self.merge is None:
            raise ValueError("this tokenizer has no merge weights")
        return self.merge(states, k)

    def downscale_each(
        self,
        states: Sequence[torch.Tensor],
        ks: Sequence[int],
        method: DownscaleMethod | None = None,
    ) -> list[torch.Tensor]:
        """Each (L_i, d) down-scaled by its k_i, in order. Pooled queries run in a few padded
        batches per k (`length_groups`), not one chunk at a time: a training batch pools
        hundreds of paragraphs, and on a GPU each call is a few dozen kernel launches."""
        method = method or self.config.downscale
        if method != "query_pool" or not states:
            return [self.downscale(s, k, method) for s, k in zip(states, ks, strict=True)]
        self.check_pools_queries()
        out: list[torch.Tensor] = [torch.empty(0)] * len(states)
        lengths = [int(s.shape[0]) for s in states]
        for k in sorted(set(ks)):
            rows = [i for i, ki in enumerate(ks) if ki == k]
            for group in length_groups([lengths[i] for i in rows], batch_overhead(self.device)):
                idx = [rows[g] for g in group]
                h = nn.utils.rnn.pad_sequence([states[i] for i in idx], batch_first=True)
                lens = [lengths[i] for i in idx]  # known on the host: nothing read back
                mask = to_device(torch.tensor(lens), h.device) if min(lens) < max(lens) else None
                y = self.adapt(query_pool(self.encoder, h, k, lengths=mask))
                for row, i in enumerate(idx):
                    out[i] = y[row, : -(-lengths[i] // k)]  # (ceil(L_i / k), d)
        return out

    @torch.inference_mode()
    def stored_states(
        self, chunks: Sequence[torch.Tensor], stride: int, batch_tokens: int = 16_384
    ) -> list[np.ndarray]:
        """Text -> extensible embeddings as an index stores them: each chunk ((L_i,) ids)
        encoded on its own, down-scaled by the base stride the way this tokenizer was trained,
        as float16 (ceil(L_i / stride), d). With query pooling: every position's state before
        the held-back layer (stride 1 only), which `downscale_from` pools at any k. Chunks run
        sorted by length, in batches of at most `batch_tokens` padded tokens. The indexer,
        `generate` and the LlamaIndex adapter all encode here."""
        from extok_rag.models.embedder import length_batches

        check_stored_stride(self.config.downscale, stride)
        out: list[np.ndarray] = [np.zeros(0, dtype=np.float16)] * len(chunks)
        order = sorted(range(len(chunks)), key=lambda i: int(chunks[i].numel()))
        for batch in length_batches([int(chunks[i].numel()) for i in order], batch_tokens):
            rows = [order[j] for j in batch]
            for i, states in zip(rows, self.encode([chunks[i] for i in rows]), strict=True):
                kept = (
                    states
                    if self.pools_queries
                    else downscale(states, stride, self.config.downscale)
                )  # (ceil(L/s), d)
                out[i] = kept.to("cpu", torch.float16).numpy()
        return out

    @torch.no_grad()
    def compress(
        self, ids: torch.Tensor, k: int, chunk_len: int, method: DownscaleMethod | None = None
    ) -> list[torch.Tensor]:
        """Split ids (n,) into chunks of `chunk_len`, encode each on its own and down-scale
        (by default the way this tokenizer was trained): one (ceil(L_i / k), d) per chunk."""
        chunks = list(ids.split(chunk_len))
        return [self.downscale(states, k, method) for states in self.encode(chunks)]

    # -- persistence ------------------------------------------------------------------------
    def delta_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changes: the adapter, the merge tree, LoRA factors, and parameters
        that require grad.

        Everything else is an exact copy of the LLM's weights, rebuilt by `from_llm`.
        """
        trained = {n for n, p in self.named_parameters() if p.requires_grad}
        return {
            n: t
            for n, t in self.state_dict().items()
            if n in trained or n.startswith(("adapter.", "merge.")) or ".lora_" in n
        }

    def save_pretrained(self, path: str | Path, full: bool = True) -> None:
        """Write weights (safetensors) and config (JSON). `full=False` stores only
        `delta_state_dict()`; the rest is rebuilt from the LLM when loading."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = self.state_dict() if full else self.delta_state_dict()
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        save_file(tensors, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
        self.save_config(path, full)

    def save_config(self, path: str | Path, full: bool) -> None:
        """Write the checkpoint's config (JSON) alone: architecture, the LLM it was trained
        for, and whether the weights beside it are `full` or only the delta."""
        write_json(
            Path(path) / CONFIG_FILE,
            {
                "format_version": FORMAT_VERSION,
                "extok_rag_version": __version__,
                "tokenizer": self.config.to_dict(),
                "llm": self.llm_identity.to_dict(),
                "full": full,
            },
        )

    @classmethod
    def from_pretrained(
        cls, path: str | Path, llm: FrozenLLM, merge: bool = True
    ) -> ExtensibleTokenizer:
        """Load a checkpoint for `llm`; refuse one made for another LLM. `merge`: fold the LoRA
        factors into the weights (for inference: a faster forward; train from `from_llm` +
        `load_weights` instead)."""
        meta = read_checkpoint_config(Path(path), llm.identity)
        tokenizer = cls.from_llm(llm, TokenizerConfig.from_dict(meta["tokenizer"]))
        tokenizer.load_weights(path, llm)
        if merge:
            merge_lora(tokenizer.encoder)
        return tokenizer

    def load_weights(self, path: str | Path, llm: FrozenLLM) -> None:
        """Load a checkpoint's tensors into this module, keeping its dtypes (training resumes
        in fp32 from here)."""
        meta = read_checkpoint_config(Path(path), llm.identity)
        state = load_file(str(Path(path) / WEIGHTS_FILE), device=str(self.device))
        unknown = set(state) - set(self.state_dict())
        if unknown:
            raise CheckpointError(f"{path}: unexpected tensors {sorted(unknown)[:3]}")
        self.load_state_dict(state, strict=bool(meta["full"]))


def truncated_config(config, num_layers: int):
    """A copy of an HF config with only the first `num_layers` decoder layers."""
    cfg = copy.deepcopy(config)
    cfg.num_hidden_layers = num_layers
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:num_layers]
    return cfg


def load_default_tokenizer(llm: FrozenLLM) -> ExtensibleTokenizer:
    """The shipped extensible tokenizer for `llm`, or the untrained one when the shipped
    checkpoint was trained for another LLM."""
    path = resolve_tokenizer(None, llm.identity)
    if path is None:
        return ExtensibleTokenizer.from_llm(llm)
    return ExtensibleTokenizer.from_pretrained(path, llm)

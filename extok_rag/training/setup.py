"""Building a tokenizer ready to train: which parameters train, and the adapter's fixed
standardisation statistics (the study's representation fix, TRAINING-NOTES.md)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from extok_rag.config import TokenizerConfig, TrainConfig
from extok_rag.models.defaults import DEFAULT_TOKENIZER_DIR
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer, read_checkpoint_config
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.lora import merge_lora

SHIPPED = "shipped"  # `init_from` value: the checkpoint packaged with extok-rag


def token_embedding_rms(llm: FrozenLLM) -> float:
    """RMS of the LLM's token-embedding matrix: the scale the LLM expects at its input."""
    weight = llm.model.get_input_embeddings().weight.float()
    return float(weight.pow(2).mean().sqrt())


def init_path(spec: str) -> Path:
    return DEFAULT_TOKENIZER_DIR if spec == SHIPPED else Path(spec).expanduser()


def with_init_shape(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with the tokenizer shape (layers, adapter) of its `init_from` checkpoint."""
    if not cfg.init_from:
        return cfg
    meta = read_checkpoint_config(init_path(cfg.init_from))
    return replace(cfg, tokenizer=TokenizerConfig.from_dict(meta["tokenizer"]))


def load_init(tokenizer: ExtensibleTokenizer, llm: FrozenLLM, spec: str) -> None:
    """Start from a trained checkpoint's weights (adapter statistics included).

    A tokenizer without LoRA factors (train_mode full or adapter) takes a LoRA checkpoint with
    its factors folded into the layer weights (in fp32): the run starts from the same function.
    """
    path = init_path(spec)
    if any(".lora_" in name for name in tokenizer.state_dict()):
        tokenizer.load_weights(path, llm)
        return
    meta = read_checkpoint_config(path, llm.identity)
    source = ExtensibleTokenizer.from_llm(llm, TokenizerConfig.from_dict(meta["tokenizer"]))
    source = source.float()
    source.load_weights(path, llm)
    merge_lora(source.encoder)
    tokenizer.load_state_dict(source.state_dict())


def build_tokenizer(llm: FrozenLLM, cfg: TrainConfig) -> ExtensibleTokenizer:
    """An untrained tokenizer for `cfg`: fp32 master weights (bf16 comes from autocast)."""
    tok_cfg = cfg.tokenizer
    adapter = replace(tok_cfg.adapter, norm_scale=token_embedding_rms(llm))
    lora = cfg.lora_rank if cfg.train_mode == "lora" else 0
    tok_cfg = replace(
        tok_cfg,
        adapter=adapter,
        lora_rank=lora,
        lora_alpha=cfg.lora_alpha,
        downscale=cfg.downscale,
    )
    tokenizer = ExtensibleTokenizer.from_llm(llm, tok_cfg).float()
    set_trainable(tokenizer, cfg.train_mode)
    return tokenizer


def set_trainable(tokenizer: ExtensibleTokenizer, mode: str) -> None:
    """lora: LoRA factors + adapter; full: decoder layers + adapter; adapter: adapter only.
    A merge tree trains in every mode. Token embeddings never train (they stay the LLM's own)."""
    tokenizer.requires_grad_(False)
    for head in (tokenizer.adapter, tokenizer.merge):
        if head is not None:
            head.requires_grad_(True)
    for name, param in tokenizer.encoder.named_parameters():
        if (mode == "lora" and ".lora_" in name) or (mode == "full" and name.startswith("layers.")):
            param.requires_grad_(True)


@torch.no_grad()
def fit_standardisation(tokenizer: ExtensibleTokenizer, chunks: torch.Tensor) -> None:
    """Fix the adapter's per-dimension mean/std from encoder states of chunks (N, L).

    Position 0 is left out: its state is the attention sink (massive norms) and strided
    sampling never picks it for k > 1.
    """
    adapter = tokenizer.adapter
    if adapter is None or not adapter.cfg.standardize:
        return
    states = tokenizer.unadapted_states(chunks.to(tokenizer.device))  # (N, L, d)
    h = states[:, 1:].float().reshape(-1, adapter.mean.numel())
    adapter.mean.copy_(h.mean(dim=0))
    adapter.std.copy_(h.std(dim=0).clamp(min=1e-4))


@torch.no_grad()
def fit_regression_init(tokenizer: ExtensibleTokenizer, llm: FrozenLLM, chunks: torch.Tensor):
    """Set the adapter's Linear by least squares so each output ≈ the LLM's embedding of the
    token at its position: at k = 1 the LLM then reads (nearly) the chunk itself, at k > 1
    every k-th token — content from the first step, which training then refines.

    chunks: (N, L) ids. Returns the fit's R² (share of target variance explained)."""
    adapter = tokenizer.adapter
    if adapter is None:
        raise ValueError("regression init needs an adapter")
    ids = chunks.to(tokenizer.device)
    h = tokenizer.unadapted_states(ids).float()  # (N, L, d)
    if adapter.cfg.standardize:
        h = (h - adapter.mean) / adapter.std
    x = adapter.norm(h)[:, 1:].reshape(-1, h.shape[-1])  # (N*(L-1), d), sink position left out
    y = llm.embed_tokens(ids[:, 1:]).float().reshape(-1, h.shape[-1])
    # in float64: float32 LAPACK gave last-bit differences between processes (its kernels
    # follow the buffers' alignment), which bf16 training steps then amplified; on the host:
    # CUDA's only driver (QR without pivoting) assumes x has full rank, the host's does not
    solution = torch.linalg.lstsq(x.double().cpu(), y.double().cpu()).solution
    w = solution.float().to(x.device)  # (d, d): x @ w ≈ y
    adapter.proj.weight.copy_(w.T)
    residual = (x @ w - y).pow(2).sum()
    return float(1 - residual / (y - y.mean(0)).pow(2).sum())

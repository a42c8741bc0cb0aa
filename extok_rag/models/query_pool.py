"""Down-scaling inside the last attention block: pooled queries (ARC-Encoder, arXiv 2510.20535).

The tokenizer's encoder holds back its last decoder layer (the encoder's own forward stops one
layer short: HF's Llama runs `layers[: config.num_hidden_layers]`), and down-scaling by k runs
that layer on k-windows instead of positions:

    h (L, d) residual stream after N-1 layers
      -> RMSNorm -> q, k, v (L positions, rotary at each position)
      -> q̄ = mean of q over each k-window (n = ceil(L / k) queries)
      -> attention of q̄_j over the keys up to the end of window j (causal, as the chunk is)
      -> + mean of h over the window (the residual, pooled) -> MLP block
      -> (n, d)

A pooled query scores each key by the mean of its window's logits, so the window's state is
written by attention over the whole chunk rather than averaged after it. ARC-Encoder drops
the residual there; here it is pooled, so at initialisation the output is mean pooling of a
layer that reads its window's mean query, and at k = 1 it is the layer itself. The output
depends on k, so an index stores the layer's input instead (every position's residual stream,
stride 1) and readers run the layer when they pool (`ask/pooling.py`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from extok_rag.errors import IncompatibleModelError


def window_sums(x: torch.Tensor, k: int) -> torch.Tensor:
    """(..., L, d) -> (..., ceil(L/k), d): the sum of each k-window (the last may be shorter)."""
    n = -(-x.shape[-2] // k)
    return F.pad(x, (0, 0, 0, n * k - x.shape[-2])).unflatten(-2, (n, k)).sum(dim=-2)


def window_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """(..., L, d) -> (..., ceil(L/k), d): the mean of each k-window (the last may be shorter)."""
    L = x.shape[-2]
    n = -(-L // k)
    counts = torch.full((n, 1), float(k), device=x.device, dtype=x.dtype)
    counts[-1] = L - (n - 1) * k
    return window_sums(x, k) / counts


def held_back_layer(encoder: nn.Module) -> nn.Module:
    """The decoder layer the encoder's forward skips: the one pooled queries run."""
    n = int(encoder.config.num_hidden_layers)
    if len(encoder.layers) != n + 1:
        raise IncompatibleModelError("query pooling needs an encoder that holds back one layer")
    layer = encoder.layers[n]
    if not all(hasattr(layer.self_attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")):
        raise IncompatibleModelError("query pooling needs a Llama-style attention block")
    return layer


def hold_back_last_layer(encoder: nn.Module) -> None:
    """Make the encoder's forward stop before its last layer (kept, weights and names as
    they were: `encoder.layers.{N-1}`)."""
    if encoder.config.num_hidden_layers < 1:
        raise ValueError("query pooling needs at least one tokenizer layer")
    encoder.config.num_hidden_layers -= 1
    held_back_layer(encoder)


def query_pool(
    encoder: nn.Module,
    h: torch.Tensor,
    k: int,
    start: int = 0,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the held-back layer on k-windows of h[..., start:, :], its keys all of h.

    h: (..., L, d), the residual stream after the encoder's N-1 layers: unpadded rows, or
    (B, L, d) rows padded past `lengths` (B,), each pooled to its own length (start 0; a
    row's windows past its length are junk, for the caller to drop).
    Returns (..., ceil((L - start) / k), d), before the output adapter.
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    layer = held_back_layer(encoder)
    attn = layer.self_attn
    lead, (L, d) = h.shape[:-2], h.shape[-2:]
    x = h.reshape(-1, L, d)  # (B, L, d)
    B, hd = x.shape[0], attn.head_dim
    span = torch.arange(L, device=x.device)
    length = torch.full((B, 1), L, device=x.device) if lengths is None else lengths[:, None]
    if lengths is not None:
        if start or len(lead) != 1:
            raise ValueError("padded rows: (B, L, d) states from the chunk's start")
        x = x * (span[None, :] < length)[..., None]  # (B, L, d), zero past each length
    cos, sin = encoder.rotary_emb(x, span[None].expand(B, L))  # (B, L, hd) each

    xn = layer.input_layernorm(x)
    q = attn.q_proj(xn).view(B, L, -1, hd).transpose(1, 2)  # (B, H, L, hd)
    key = attn.k_proj(xn).view(B, L, -1, hd).transpose(1, 2)  # (B, Hkv, L, hd)
    value = attn.v_proj(xn).view(B, L, -1, hd).transpose(1, 2)  # (B, Hkv, L, hd)
    q, key = apply_rotary_pos_emb(q, key, cos, sin)

    n = -(-(L - start) // k)
    window = torch.arange(n, device=x.device)  # (n,)
    ends = torch.minimum(start + (window[None] + 1) * k, length)  # (B, n)
    counts = (ends - start - window[None] * k).clamp(min=1).to(x.dtype)  # (B, n)
    if lengths is not None:
        q = q * (span[None, :] < length)[:, None, :, None]  # a padded query adds nothing
    pooled_q = window_sums(q[..., start:, :], k) / counts[:, None, :, None]  # (B, H, n, hd)
    visible = span[None, None, :] < ends[..., None]  # (B, n, L)
    out = F.scaled_dot_product_attention(
        pooled_q, key, value, attn_mask=visible[:, None], scale=attn.scaling, enable_gqa=True
    )  # (B, H, n, hd)
    out = attn.o_proj(out.transpose(1, 2).reshape(B, n, -1))  # (B, n, d)

    y = window_sums(x[:, start:], k) / counts[..., None] + out  # the residual, pooled
    y = y + layer.mlp(layer.post_attention_layernorm(y))
    return y.reshape(*lead, n, d)

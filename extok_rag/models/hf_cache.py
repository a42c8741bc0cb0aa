"""The KV cache's name in transformers' causal-LM forward: `cache` from 5.20 (this project's
pin), `past_key_values` before. The device image's python runs the prepared GPU run
(`research/scripts/device_train.py`) with its own transformers 5.17, and that run decodes (the
answer probe's greedy accuracy), so the name is looked up once, here, not assumed."""

from __future__ import annotations

import dataclasses

from transformers import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

CACHE_ARG = (
    "cache"
    if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    else "past_key_values"
)


def cache_kwargs(cache: Cache | None) -> dict[str, Cache | None]:
    """The forward's keyword argument for a cache to read and extend."""
    return {CACHE_ARG: cache}


def returned_cache(out: CausalLMOutputWithPast) -> Cache:
    """The cache a forward with `use_cache=True` returned."""
    return getattr(out, CACHE_ARG)

"""Identity of a frozen LLM: a name plus a fingerprint of its config and weights.

An extensible tokenizer is trained for one LLM; a checkpoint or an index records this identity,
and loading it beside another LLM is refused. The fingerprint does not depend on the dtype the
LLM was loaded in: it hashes a fixed sample of every weight tensor rounded to bfloat16.
"""

from __future__ import annotations

import hashlib
import json

import torch

# Config fields that change what the model computes (names, dtypes and paths do not).
_CONFIG_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_parameters",
    "rope_theta",
    "rope_scaling",
    "tie_word_embeddings",
    "hidden_act",
)
_SAMPLES_PER_TENSOR = 4096


def config_digest(config) -> dict:
    cfg = config.to_dict()
    return {key: cfg[key] for key in _CONFIG_FIELDS if key in cfg}


@torch.no_grad()
def fingerprint(model: torch.nn.Module, config) -> str:
    """sha256 over the config's computing fields and a strided sample of every parameter."""
    h = hashlib.sha256(json.dumps(config_digest(config), sort_keys=True, default=str).encode())
    for name, param in sorted(model.state_dict().items()):
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
        sample = flat[::step][:_SAMPLES_PER_TENSOR].to("cpu", torch.bfloat16)
        h.update(f"{name}:{tuple(param.shape)}".encode())
        h.update(sample.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]

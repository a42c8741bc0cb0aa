"""How a reader pools a chunk's stored states to k.

An index records how its tokenizer down-scales (the manifest's `downscale`). The parameter-free
methods (`strided`, `mean`) are read by name. A tokenizer that pools queries
(`models/query_pool.py`) is stored as its states before the held-back layer, one per position;
a reader pools them by running that layer, so it loads the tokenizer the manifest names (by
path) and checks its fingerprint first: states read through another tokenizer's layer would
be noise.
"""

from __future__ import annotations

from pathlib import Path

import torch

from extok_rag.config import ModelIdentity
from extok_rag.errors import IncompatibleModelError
from extok_rag.indexes import IndexSnapshot
from extok_rag.models.checkpoint import CONFIG_FILE
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM
from extok_rag.spans import Pooling

# loaded tokenizers by (tokenizer fingerprint, LLM fingerprint, device, dtype): a server reads
# one index for its whole life
_LOADED: dict[tuple[str, str, str, str], ExtensibleTokenizer] = {}


class HeldBackPooler:
    """A tokenizer's `downscale_from` as a reader calls it: stored float32 states on the host
    in, (n, d) float32 on the host out, no gradients."""

    def __init__(self, tokenizer: ExtensibleTokenizer):
        self.tokenizer = tokenizer
        self.dtype = next(tokenizer.parameters()).dtype

    @torch.inference_mode()
    def __call__(self, states: torch.Tensor, start: int, k: int) -> torch.Tensor:
        x = states.to(self.tokenizer.device, self.dtype)  # (L, d)
        return self.tokenizer.downscale_from(x, start, k).to("cpu", torch.float32)


def tokenizer_pooling(tokenizer: ExtensibleTokenizer) -> Pooling:
    """How the states `tokenizer.stored_states` gives are read at k."""
    return HeldBackPooler(tokenizer) if tokenizer.pools_queries else tokenizer.config.downscale


def snapshot_pooling(snapshot: IndexSnapshot, llm: FrozenLLM | None) -> Pooling:
    """How this index's stored states are read at k: the manifest's method, or the held-back
    layer of the tokenizer it names (which needs `llm`; without it, the method's name)."""
    method = snapshot.manifest.downscale
    if method != "query_pool" or llm is None:
        return method
    return HeldBackPooler(index_tokenizer(snapshot.manifest.tokenizer, llm))


def index_tokenizer(identity: ModelIdentity, llm: FrozenLLM) -> ExtensibleTokenizer:
    """The tokenizer an index was built with, loaded from the path its identity names once
    its weights' fingerprint matches; IncompatibleModelError in one line otherwise."""
    from extok_rag.models.embedder import weights_fingerprint

    key = (identity.fingerprint, llm.identity.fingerprint, str(llm.device), str(llm.dtype))
    if key in _LOADED:
        return _LOADED[key]
    path = Path(identity.name)
    advice = "restore it, or re-index with --rebuild"
    if not (path / CONFIG_FILE).is_file():
        raise IncompatibleModelError(
            f"this index's states are pooled by the extensible tokenizer at {path}, which is "
            f"not there: {advice}"
        )
    if weights_fingerprint(path) != identity.fingerprint:
        raise IncompatibleModelError(
            f"this index's states are pooled by the extensible tokenizer at {path}, whose "
            f"weights changed since (fingerprint {identity.fingerprint} in the index): {advice}"
        )
    _LOADED[key] = ExtensibleTokenizer.from_pretrained(path, llm)
    return _LOADED[key]

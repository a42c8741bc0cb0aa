"""The models an index run writes with, resolved lazily: identities without loading them.

An up-to-date run needs only the identities (to compare with the manifest), so the extensible
tokenizer and the embedder load on first use; the LLM is loaded by the caller.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from extok_rag.errors import IncompatibleModelError
from extok_rag.indexes import ModelIdentity


class IndexModels:
    """The models an index is built with. Identities come without loading the extensible
    tokenizer or the embedder; those load on first use, so an up-to-date run loads neither."""

    def __init__(self, llm, tokenizer_path: Path | None = None, embedder_path: Path | None = None):
        self.llm = llm  # FrozenLLM, already on its device and dtype
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else None
        self.embedder_path = Path(embedder_path) if embedder_path else None

    @property
    def llm_identity(self) -> ModelIdentity:
        return self.llm.identity

    @cached_property
    def tokenizer_identity(self) -> ModelIdentity:
        from extok_rag.models.embedder import weights_fingerprint

        if self.tokenizer_path is None:
            from extok_rag.config import TokenizerConfig

            layers = min(TokenizerConfig.num_layers, int(self.llm.config.num_hidden_layers))
            fingerprint = f"untrained:{self.llm.identity.fingerprint}:{layers}"
            return ModelIdentity("untrained (from_llm)", fingerprint)
        path = self.tokenizer_path.expanduser().resolve()
        return ModelIdentity(str(path), weights_fingerprint(path))

    @cached_property
    def tokenizer_downscale(self) -> str:
        """The down-scale the extensible tokenizer was trained with, read from its config
        (strided for the untrained one). A merge tree's output depends on k, so it cannot be
        stored once; query pooling's can, as the states before its held-back layer."""
        from extok_rag.models.checkpoint import read_checkpoint_config

        if self.tokenizer_path is None:
            return "strided"
        meta = read_checkpoint_config(self.tokenizer_path.expanduser())
        method = str(meta["tokenizer"].get("downscale", "strided"))
        if method == "merge":
            raise IncompatibleModelError(
                f"{self.tokenizer_path}: a tokenizer trained with merge down-scaling cannot "
                "be indexed yet (the index stores states at stride 2 and pools them at query time)"
            )
        return method

    @cached_property
    def embedder_identity(self) -> str:
        from extok_rag.models.defaults import resolve_embedder
        from extok_rag.models.embedder import embedder_identity

        if self.embedder_path is None:
            resolved = resolve_embedder()
            return embedder_identity(resolved.path, resolved.name)
        path = self.embedder_path.expanduser().resolve()
        return embedder_identity(path, path.name)

    @cached_property
    def tokenizer(self):
        from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer

        if self.tokenizer_path is None:
            return ExtensibleTokenizer.from_llm(self.llm)
        return ExtensibleTokenizer.from_pretrained(self.tokenizer_path, self.llm)

    @cached_property
    def embedder(self):
        from extok_rag.config import RuntimeConfig
        from extok_rag.models.embedder import Embedder

        device = str(self.llm.device)
        dtype = str(self.llm.dtype).removeprefix("torch.")
        return Embedder.load(self.embedder_path, RuntimeConfig(device=device, dtype=dtype))

    @property
    def state_dim(self) -> int:
        return self.llm.hidden_size

    @property
    def embedder_dim(self) -> int:
        """The retrieval vectors' size, read from the embedder's config (without loading it)."""
        from extok_rag.models.defaults import resolve_embedder

        path = self.embedder_path or resolve_embedder().path
        return int(json.loads((Path(path) / "config.json").read_text())["hidden_size"])

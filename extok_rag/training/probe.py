"""Fast content probe: does anything of a chunk get through its extensible embeddings?

Paired perplexities of the last chunk of a few held-out sequences (the same tokens in every
row). Content shows as k-dependence (k=2 beats k=16 beats no context) and as
self-reconstruction (a chunk scored after its *own* embeddings beats another chunk's).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from extok_rag.config import DownscaleMethod
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import EmbeddingSegment, Row, TokenSegment
from extok_rag.training.objective import ChunkLosses, encode_sequence, row_losses

PROBE_KS = (2, 16)


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """`module` in eval mode, its own mode back afterwards, also when a probe raises (a run
    that records a failed probe and trains on must not train in eval mode)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@dataclass
class ContentProbe:
    sequences: torch.Tensor  # (P, C, L) held-out token ids
    method: DownscaleMethod = "strided"
    _baselines: dict[str, ChunkLosses] = field(default_factory=dict)

    @torch.no_grad()
    def run(self, llm: FrozenLLM, tokenizer: ExtensibleTokenizer) -> dict[str, float]:
        """Perplexities by row name: none, raw, k2, k16, self_k2, other_k2."""
        return {name: nll_to_ppl(nll) for name, nll in self.run_detailed(llm, tokenizer).items()}

    @torch.no_grad()
    def run_detailed(
        self, llm: FrozenLLM, tokenizer: ExtensibleTokenizer
    ) -> dict[str, ChunkLosses]:
        """Per-sequence summed NLL and token counts by row name (for paired statistics)."""
        if not self._baselines:
            self._baselines = {
                "none": row_losses(llm, [[TokenSegment(s[-1])] for s in self.sequences]),
                "raw": row_losses(
                    llm,
                    [
                        [TokenSegment(s[:-1].reshape(-1), scored=False), TokenSegment(s[-1])]
                        for s in self.sequences
                    ],
                ),
            }
        with evaluating(tokenizer):
            result = dict(self._baselines)
            for k in PROBE_KS:
                embeds = [encode_sequence(tokenizer, s, k, self.method) for s in self.sequences]
                rows = [
                    [EmbeddingSegment(torch.cat(e[:-1])), TokenSegment(s[-1])]
                    for s, e in zip(self.sequences, embeds, strict=True)
                ]
                result[f"k{k}"] = row_losses(llm, rows)
                if k == PROBE_KS[0]:
                    own = [e[-1] for e in embeds]
                    other = own[1:] + own[:1]  # the last chunk of the next sequence
                    last = [s[-1] for s in self.sequences]
                    result[f"self_k{k}"] = row_losses(llm, self_rows(own, last))
                    result[f"other_k{k}"] = row_losses(llm, self_rows(other, last))
        return result


def nll_to_ppl(losses: ChunkLosses) -> float:
    return math.exp(float(losses.mean()))


def self_rows(embeds: list[torch.Tensor], chunks: list[torch.Tensor]) -> list[Row]:
    return [[EmbeddingSegment(e), TokenSegment(c)] for e, c in zip(embeds, chunks, strict=True)]

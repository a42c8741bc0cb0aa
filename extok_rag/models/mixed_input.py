"""Mixed input: a row of segments, each raw token ids or extensible embeddings, made into the
`inputs_embeds`, `attention_mask` and `position_ids` a frozen LLM reads.

Positions are contiguous over the whole mixed row (the paper does not state them; contiguous is
the natural choice): an embedding segment of m vectors takes m positions, like m tokens would.
Rows are padded to a common length; padding takes no position and is masked out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from extok_rag.models.transfer import to_device

IGNORE_INDEX = -100  # label of positions that carry no next-token target


@dataclass(frozen=True)
class TokenSegment:
    """Raw token ids, embedded by the LLM's own embedding table. `scored=False` marks raw
    context whose tokens are read but are not next-token targets (no labels)."""

    ids: torch.Tensor  # (n,) long
    scored: bool = True

    def __len__(self) -> int:
        return int(self.ids.numel())


@dataclass(frozen=True)
class EmbeddingSegment:
    """Extensible embeddings, read by the LLM in place of token embeddings."""

    embeds: torch.Tensor  # (m, d)

    def __len__(self) -> int:
        return int(self.embeds.shape[0])


Segment = TokenSegment | EmbeddingSegment
Row = Sequence[Segment]


def causal_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 1 = real position -> (B, 1, T, T) bool, True where query t may read key s:
    s <= t and s is real. The mask transformers builds from a padded batch's 2D mask, built
    here on the mask's device: handed the 2D mask, transformers first asks whether the batch
    is padded at all with a Python bool, and on a GPU that waits for every queued kernel."""
    T = mask.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=mask.device).tril()  # (T, T)
    return causal[None, None] & mask.bool()[:, None, None, :]


@dataclass
class MixedBatch:
    """A padded batch of mixed rows, and what the host knew of it when building it."""

    inputs_embeds: torch.Tensor  # (B, T, d)
    attention_mask: torch.Tensor  # (B, T) long, 1 = real position
    position_ids: torch.Tensor  # (B, T) long, contiguous over real positions
    labels: torch.Tensor  # (B, T) long: the token id at token positions, IGNORE_INDEX elsewhere
    scored: torch.Tensor  # (N,) long: flat (B * T) indices of the positions predicting a
    # scored token (`next_token_targets`' True entries, row-major), found on the host
    targets: torch.Tensor  # (N,) long: the token each of them predicts
    padded: bool  # some row is shorter than the batch

    def model_inputs(self) -> dict[str, torch.Tensor | None]:
        """What the model's forward reads, with nothing for transformers to check on the
        host: no mask and its own positions (0 … T-1, the same) for a batch with no padding,
        else the 4D causal-and-padding mask (`causal_padding_mask`). The same numbers as
        handing it the 2D mask (tested to the bit)."""
        if not self.padded:
            return {"inputs_embeds": self.inputs_embeds, "attention_mask": None}
        return {
            "inputs_embeds": self.inputs_embeds,
            "attention_mask": causal_padding_mask(self.attention_mask),
            "position_ids": self.position_ids,
        }

    def per_position(self, values: torch.Tensor) -> torch.Tensor:
        """Values at the scored positions (N,), in `scored`'s order -> (B, T-1), 0 elsewhere:
        placed by the host's indices, where a boolean mask would need the device's values."""
        B, T = self.labels.shape
        flat = torch.zeros(B * T, dtype=values.dtype, device=values.device)
        return flat.index_copy(0, self.scored, values).view(B, T)[:, :-1]

    @property
    def lengths(self) -> torch.Tensor:  # (B,)
        return self.attention_mask.sum(dim=1)

    @property
    def next_token_targets(self) -> torch.Tensor:  # (B, T-1) bool
        """Where position t predicts a scored token at t+1 (padding never predicts)."""
        return (self.labels[:, 1:] != IGNORE_INDEX) & (self.attention_mask[:, :-1] == 1)


def row_length(row: Row) -> int:
    return sum(len(seg) for seg in row)


def _ignored(n: int) -> torch.Tensor:  # (n,) labels of positions that are never targets
    return torch.full((n,), IGNORE_INDEX, dtype=torch.long)


def build_batch(
    rows: Sequence[Row],
    embed_tokens: Callable[[torch.Tensor], torch.Tensor],
    padding_side: Literal["left", "right"] = "right",
) -> MixedBatch:
    """Embed and pad rows. `embed_tokens` maps ids (n,) to (n, d) in the LLM's dtype/device.

    Left padding suits generation (every row ends at the last column); right padding suits
    training. Every row's token ids are embedded in one call (one copy to the device, one
    lookup: a training batch holds hundreds of token segments); mask and labels are built on
    the host and copied once. Embedding segments are cast to the token embeddings' dtype and
    device.
    """
    tokens = [seg for row in rows for seg in row if isinstance(seg, TokenSegment)]
    ids = torch.cat([seg.ids.cpu() for seg in tokens]) if tokens else torch.zeros(0).long()
    table = embed_tokens(ids)  # (all token positions, d)
    device, dtype, d = table.device, table.dtype, table.shape[-1]
    embedded = iter(table.split([len(seg) for seg in tokens]))
    lengths = [row_length(row) for row in rows]
    B, T = len(rows), max(lengths)
    inputs = torch.zeros(B, T, d, dtype=dtype, device=device)
    mask = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    for b, (row, n) in enumerate(zip(rows, lengths, strict=True)):
        parts, row_labels = [], []
        for seg in row:
            if isinstance(seg, TokenSegment):
                parts.append(next(embedded))
                row_labels.append(seg.ids.cpu() if seg.scored else _ignored(len(seg)))
            else:
                parts.append(seg.embeds.to(device=device, dtype=dtype))
                row_labels.append(_ignored(len(seg)))
        span = slice(T - n, T) if padding_side == "left" else slice(0, n)
        inputs[b, span] = torch.cat(parts)
        mask[b, span] = 1
        labels[b, span] = torch.cat(row_labels)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    predicts = torch.zeros(B, T, dtype=torch.bool)  # position t predicts a scored token at t+1
    predicts[:, :-1] = (labels[:, 1:] != IGNORE_INDEX) & (mask[:, :-1] == 1)
    scored = predicts.flatten().nonzero().flatten()  # (N,)
    targets = labels.flatten()[scored + 1]  # (N,) the next position's token, same row
    mask, positions, labels, scored, targets = (
        to_device(t, device) for t in (mask, positions, labels, scored, targets)
    )
    return MixedBatch(inputs, mask, positions, labels, scored, targets, min(lengths) < T)

"""Continuous batching: a set of live rows sharing one KV cache, joining and leaving between
decoding steps.

`decode_steps` decodes a fixed batch until its longest answer ends, so a server running it
would make every request wait for the slowest one in its batch. Here a row joins at the next
step (`admit`: the newcomers are prefilled together, then their KV tensors are merged into the
running cache) and leaves at its own end (end of turn, the loop guard, its `max_new_tokens`, or
`remove` when its client went away), so the batch stays full while requests come and go.

Every row keeps its own geometry, exactly as in `decode_steps`: rows are left-padded (the newest
position of every row is the cache's last column), padding columns are masked and take no
position, and each step feeds every row its last token at its own next position. So a row's
tokens are those `generate_ids` picks for it alone, up to low-precision noise (identical in
float32 on the tiny test models).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from extok_rag.config import GenerationConfig
from extok_rag.models.generation import loops, next_token
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import Row, row_length

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (B, H, T, D)


@dataclass(frozen=True)
class Emitted:
    """One row's outcome of a step: its new token (None when it ended at an end-of-turn token,
    which is never part of the answer), whether it left the batch, and its token count."""

    key: Hashable
    token: int | None
    done: bool
    count: int  # tokens generated so far (`finish_reason` "length" when >= max_new_tokens)


@dataclass
class _Live:
    """A row's bookkeeping: who it is, how it picks, what it generated."""

    key: Hashable
    cfg: GenerationConfig
    gen: torch.Generator | None  # its own seeded generator, as `generate_ids` makes one
    ids: list[int] = field(default_factory=list)


def _generator(cfg: GenerationConfig) -> torch.Generator | None:
    return torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None


def _pad_left(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Zeros prepended along `dim` (counted from the end) up to `length`."""
    missing = length - x.shape[dim]
    if missing == 0:
        return x
    pad = [0, 0] * (-dim - 1) + [missing, 0]  # F.pad lists the last dimension first
    return F.pad(x, pad)


def _layers(cache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


class DecodeBatch:
    """Live rows sharing one KV cache. `admit` prefills newcomers and merges them in; `step`
    gives every live row one more token; both return what each row did (`Emitted`) and drop
    the rows that ended. `remove` takes rows out at once (a cancelled request)."""

    def __init__(self, llm: FrozenLLM):
        self.llm = llm
        self.stop = llm.eos_token_ids
        self.rows: list[_Live] = []  # aligned with the batch axis
        self.cache: DynamicCache | None = None  # per layer (B, H, T, D)
        self.mask: torch.Tensor | None = None  # (B, T) long, 1 = a real position
        self.last: torch.Tensor | None = None  # (B,) the token each row feeds next
        self.positions: torch.Tensor | None = None  # (B,) the position it takes

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def keys(self) -> list[Hashable]:
        return [row.key for row in self.rows]

    def check(self, row: Row, cfg: GenerationConfig) -> None:
        """Raise InputTooLongError unless the prompt and its whole answer fit the window, as
        `decode_steps` checks before its prefill (call before `admit`)."""
        self.llm.check_fits(row_length(row) + cfg.max_new_tokens)

    @torch.inference_mode()
    def admit(self, entries: Sequence[tuple[Hashable, Row, GenerationConfig]]) -> list[Emitted]:
        """Prefill new rows together (left-padded, as `decode_steps` does), pick each one's
        first token, and merge them into the batch. Nothing changes when this raises."""
        if not entries:
            return []
        batch = self.llm.batch([row for _, row, _ in entries], padding_side="left")
        out = self.llm.model(
            inputs_embeds=batch.inputs_embeds,  # (n, T', d)
            attention_mask=batch.attention_mask,  # (n, T')
            position_ids=batch.position_ids,  # (n, T')
            use_cache=True,
            logits_to_keep=1,
        )
        rows = [_Live(key, cfg, _generator(cfg)) for key, _, cfg in entries]
        tokens = self._pick(out.logits[:, -1], rows)  # (n, V) -> n ints
        start = len(self.rows)
        self._merge(out.cache, batch.attention_mask, batch.lengths, rows)
        return self._record(start, tokens)

    @torch.inference_mode()
    def step(self) -> list[Emitted]:
        """One token for every live row: its last token fed at its own next position."""
        if not self.rows:
            return []
        B = len(self.rows)
        mask = torch.cat([self.mask, self.mask.new_ones(B, 1)], dim=1)  # (B, T+1)
        out = self.llm.model(
            input_ids=self.last[:, None],  # (B, 1)
            attention_mask=mask,
            position_ids=self.positions[:, None],  # (B, 1)
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.cache, self.mask = out.cache, mask
        self.positions = self.positions + 1
        return self._record(0, self._pick(out.logits[:, -1], self.rows))  # (B, V)

    def remove(self, keys: Sequence[Hashable]) -> None:
        """Take these rows out of the batch now (unknown keys are ignored)."""
        gone = set(keys)
        if any(row.key in gone for row in self.rows):
            self._keep([i for i, row in enumerate(self.rows) if row.key not in gone])

    def clear(self) -> None:
        self.rows, self.cache, self.mask, self.last, self.positions = [], None, None, None, None

    # -- tokens ------------------------------------------------------------------------------
    def _pick(self, logits: torch.Tensor, rows: Sequence[_Live]) -> list[int]:
        """Each row's token from last-position logits (n, V): one argmax for the greedy rows,
        `next_token` with the row's own generator for the sampling ones."""
        tokens = logits.argmax(-1).tolist()  # (n,)
        for i, row in enumerate(rows):
            if row.cfg.temperature > 0:
                tokens[i] = next_token(logits[i].cpu(), row.cfg, row.gen)
        return tokens

    def _record(self, start: int, tokens: list[int]) -> list[Emitted]:
        """Book `tokens` for rows `start:`, as `generate_ids` would end each row, and drop the
        rows that ended."""
        emitted, keep = [], list(range(start))
        for i, token in enumerate(tokens, start):
            row = self.rows[i]
            if token in self.stop or row.cfg.max_new_tokens <= 0:  # as `decode_steps` ends
                emitted.append(Emitted(row.key, None, True, len(row.ids)))
                continue
            row.ids.append(token)
            done = len(row.ids) >= row.cfg.max_new_tokens or loops(row.ids, row.cfg.repeat_stop)
            emitted.append(Emitted(row.key, token, done, len(row.ids)))
            if not done:
                keep.append(i)
        new = torch.tensor(tokens, dtype=torch.long, device=self.mask.device)  # (n,)
        self.last = new if start == 0 else torch.cat([self.last, new])
        if len(keep) < len(self.rows):
            self._keep(keep)
        return emitted

    # -- the shared cache --------------------------------------------------------------------
    def _merge(
        self, cache: DynamicCache, mask: torch.Tensor, lengths: torch.Tensor, rows: list[_Live]
    ) -> None:
        """Append prefilled rows (their cache (n, H, T', D) per layer, mask (n, T'), prompt
        lengths (n,): their first token's position) on the batch axis; the shorter time axis
        is padded on the left with masked zeros."""
        positions = lengths.to(mask.device)  # (n,)
        if self.cache is not None:
            T = max(self.mask.shape[1], mask.shape[1])
            kv = [
                (
                    torch.cat([_pad_left(k0, T, -2), _pad_left(k1, T, -2)]),
                    torch.cat([_pad_left(v0, T, -2), _pad_left(v1, T, -2)]),
                )
                for (k0, v0), (k1, v1) in zip(_layers(self.cache), _layers(cache), strict=True)
            ]
            cache = DynamicCache(ddp_cache_data=kv)
            mask = torch.cat([_pad_left(self.mask, T, -1), _pad_left(mask, T, -1)])  # (B+n, T)
            positions = torch.cat([self.positions, positions])  # (B+n,)
        self.cache, self.mask, self.positions = cache, mask, positions
        self.rows = self.rows + rows

    def _keep(self, keep: list[int]) -> None:
        """Only rows `keep` stay (index_select on the batch axis), and leading mask columns no
        remaining row uses go."""
        if not keep:
            self.clear()
            return
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask.index_select(0, index)  # (B', T)
        first = int(mask.any(dim=0).nonzero()[0])  # the first column a row still uses
        kv = [
            (k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:])
            for k, v in _layers(self.cache)
        ]
        self.cache, self.mask = DynamicCache(ddp_cache_data=kv), mask[:, first:]
        self.last = self.last.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        self.rows = [self.rows[i] for i in keep]

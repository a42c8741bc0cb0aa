"""Continuous batching: a set of live rows sharing one KV cache, joining and leaving between
decoding steps.

`decode_steps` decodes a fixed batch until its longest answer ends, so a server running it
would make every request wait for the slowest one in its batch. Here a row joins at the next
step (`admit`: the newcomers are prefilled together, then their KV tensors are merged into the
running cache) and leaves at its own end (end of turn, the loop guard, its `max_new_tokens`, or
`remove` when its client went away), so the batch stays full while requests come and go.

Every row keeps its own geometry, exactly as in `decode_steps`: each is prefilled alone, its
cache starts at column 0 of the shared buffer (`StaticKV`), and each step feeds every row its
last token at its own next position. So a row's tokens are those `generate_ids` picks for it
alone, bit for bit on the fast step, whoever else joins or leaves (tests).

The cache is a `StaticKV` buffer that a step writes one column per row of (`decode_step`: the
same fast step `decode_steps` runs); joining and leaving rows rebuild it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from extok_rag.config import GenerationConfig
from extok_rag.models.decode_step import decode_step
from extok_rag.models.generation import loops, next_token, prefill
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import Row, row_length
from extok_rag.models.static_kv import StaticKV


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


class DecodeBatch:
    """Live rows sharing one KV cache. `admit` prefills newcomers and merges them in; `step`
    gives every live row one more token; both return what each row did (`Emitted`) and drop
    the rows that ended. `remove` takes rows out at once (a cancelled request)."""

    def __init__(self, llm: FrozenLLM, fast: bool = True):
        self.llm = llm
        self.stop = llm.eos_token_ids
        self.rows: list[_Live] = []  # aligned with the batch axis
        self.kv: StaticKV | None = None  # per layer (B, H, T, D) in a buffer of spare columns
        self.last: torch.Tensor | None = None  # (B,) the token each row feeds next
        self.positions: torch.Tensor | None = None  # (B,) the position it takes
        # `fast=False`: the model's forward; else the written-out step, on the layers' 4-bit
        # GGUF weights where the LLM has them (`FrozenLLM.q4_weights`), as `decode_steps`
        self._step = decode_step(llm.model, fast, llm.q4_weights() if fast else None)

    @property
    def mask(self) -> torch.Tensor | None:  # (B, T) bool, True = a real position
        return None if self.kv is None else self.kv.used_mask()

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
        """Prefill new rows (each alone, as `decode_steps` does), pick each one's first token,
        and merge them into the batch. Nothing changes when this raises."""
        if not entries:
            return []
        room = max(cfg.max_new_tokens for _, _, cfg in entries)  # spare columns for the answers
        logits, kv = prefill(self.llm, [row for _, row, _ in entries], room)  # (n, V)
        rows = [_Live(key, cfg, _generator(cfg)) for key, _, cfg in entries]
        tokens = self._pick(logits, rows)  # n ints
        start = len(self.rows)
        self._merge(kv, rows)
        emitted = self._record(start, tokens)
        self._sort()
        return emitted

    @torch.inference_mode()
    def step(self) -> list[Emitted]:
        """One token for every live row: its last token fed at its own next position."""
        if not self.rows:
            return []
        logits = self._step(self.kv, self.last, self.positions)  # (B, V); kv one column on
        self.positions = self.positions + 1
        return self._record(0, self._pick(logits, self.rows))

    def remove(self, keys: Sequence[Hashable]) -> None:
        """Take these rows out of the batch now (unknown keys are ignored)."""
        gone = set(keys)
        if any(row.key in gone for row in self.rows):
            self._keep([i for i, row in enumerate(self.rows) if row.key not in gone])

    def clear(self) -> None:
        self.rows, self.kv, self.last, self.positions = [], None, None, None

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
        new = torch.tensor(tokens, dtype=torch.long, device=self.llm.device)  # (n,)
        self.last = new if start == 0 else torch.cat([self.last, new])
        if len(keep) < len(self.rows):
            self._keep(keep)
        return emitted

    # -- the shared cache --------------------------------------------------------------------
    def _merge(self, kv: StaticKV, rows: list[_Live]) -> None:
        """Append prefilled rows (their cache `kv`; its lengths (n,) are their first token's
        positions) on the batch axis."""
        positions = kv.lengths.clone()  # (n,)
        if self.kv is not None:
            kv = self.kv.extend(kv)
            positions = torch.cat([self.positions, positions])  # (B+n,)
        self.kv, self.positions = kv, positions
        self.rows = self.rows + rows

    def _sort(self) -> None:
        """Rows longest first (`StaticKV.runs`: rows of one attention width side by side, one
        attention call per run). Steps lengthen every row by one, so the order holds until
        the next `admit`; a newcomer is most often the shortest, so appending it keeps the
        order and no copy of the cache is needed."""
        if self.kv is None:
            return
        lengths = self.kv.lengths.tolist()
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        if order != sorted(order):
            self._keep(order)

    def _keep(self, keep: list[int]) -> None:
        """Only rows `keep` stay, in this order."""
        if not keep:
            self.clear()
            return
        index = torch.tensor(keep, device=self.llm.device)
        self.kv = self.kv.select(keep)
        self.last = self.last.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        self.rows = [self.rows[i] for i in keep]

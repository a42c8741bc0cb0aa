"""A pre-allocated KV cache for decoding: every layer's keys and values in one buffer that a
decoding step writes one column of, instead of a Hugging Face `DynamicCache` that concatenates
(re-allocates and copies) the whole cache of every layer at every step.

Layout: every row starts at column 0. Row b holds its `lengths[b]` positions in columns
`[0, lengths[b])`, and its next step writes column `lengths[b]`; the columns after a row's own
are masked. A step attends each row over its own width: its length + 1 rounded up to a
multiple of `ALIGN`, which depends on the row alone. `runs` groups consecutive rows of one
width, one attention call each (callers keep rows longest first, so a batch of similar
lengths is one run). So a row's attention is the same computation, bit for bit, alone or in
any batch beside rows of any length: SDPA's CPU kernel computes each (row, head) apart (once
its per-thread scratch is aligned: `decode_step.LlamaStep._attend`), over the same width.
Measured on SmolLM2: a left-padded row (the layout before) moved outputs by up to 1e-3, and with
them 16% of greedy answers on HotpotQA when the batch a question shared changed; one width for
the whole batch (the longest row's) still moved 2 of 300 answers (the kernel's last block of
keys is as wide as the width makes it, and its sums run in another order).

Columns `[width, capacity)` are free space for the next steps; when they run out the buffer
grows (doubles), which `decode_steps` never needs (it sizes the buffer for the prompt and its
whole answer) and a long-lived `DecodeBatch` needs rarely.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

ALIGN = 64  # the attention width's multiple (see the module docstring)

Layers = Sequence[tuple[torch.Tensor, torch.Tensor]]  # per layer keys, values (B, H_kv, T, D)


def aligned(columns: int) -> int:
    return -(-columns // ALIGN) * ALIGN


class StaticKV:
    """Keys and values (L, B, H_kv, C, D); row b's cache in columns [0, lengths[b]). Columns
    past a row's length hold zeros or an old value, never garbage: a masked column still meets
    a zero attention weight, and 0 x NaN would be NaN."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor):
        self.keys, self.values = keys, values  # (L, B, H_kv, C, D)
        self.lengths = lengths  # (B,) long
        self.width = 0  # the open step's attention width (`open_column`)
        self.step_mask: torch.Tensor | None = None  # (B, 1, 1, width) bool, the open step's
        # the open step's runs of consecutive rows of one own width: (first, stop, width)
        self.runs: list[tuple[int, int, int]] = []
        self._views()

    def _views(self) -> None:
        # Per-layer views made once per allocation, not per step: indexing costs a dispatch.
        self.layer_keys = self.keys.unbind(0)  # L x (B, H_kv, C, D)
        self.layer_values = self.values.unbind(0)
        self.row_index = torch.arange(self.batch_size, device=self.keys.device)  # (B,)

    @classmethod
    def empty(cls, like: torch.Tensor, n_layers: int, lengths: torch.Tensor, capacity: int):
        """A zeroed buffer of `capacity` columns for len(lengths) rows of keys like `like`
        (·, H_kv, ·, D)."""
        _, H, _, D = like.shape
        shape = (n_layers, len(lengths), H, aligned(max(capacity, 1)), D)
        return cls(like.new_zeros(shape), like.new_zeros(shape), lengths.to(like.device).long())

    @classmethod
    def from_rows(cls, rows: Sequence[Layers], room: int) -> StaticKV:
        """One row per entry, each its own prefill's cache (1, H_kv, T_b, D) per layer, with
        `room` spare columns after the longest."""
        firsts = [layers[0][0] for layers in rows]
        lengths = torch.tensor([k.shape[2] for k in firsts])
        kv = cls.empty(firsts[0], len(rows[0]), lengths, int(lengths.max()) + room)
        for b, layers in enumerate(rows):
            T = firsts[b].shape[2]
            for i, (k, v) in enumerate(layers):
                kv.keys[i, b, :, :T] = k[0]
                kv.values[i, b, :, :T] = v[0]
        return kv

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    @property
    def longest(self) -> int:
        return int(self.lengths.max())

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer the keys and values (B, H_kv, longest, D) (views; `used_mask` says which
        columns are real)."""
        n = self.longest
        return [
            (k[:, :, :n], v[:, :, :n])
            for k, v in zip(self.layer_keys, self.layer_values, strict=True)
        ]

    def used_mask(self) -> torch.Tensor:  # (B, longest) bool
        columns = torch.arange(self.longest, device=self.lengths.device)
        return columns[None] < self.lengths[:, None]

    # -- a decoding step ---------------------------------------------------------------------
    def open_column(self) -> None:
        """Make room for one more position in every row and fix the step's attention width
        and mask; `write` fills each row's new column per layer, `close_column` commits it."""
        widths = [aligned(n + 1) for n in self.lengths.tolist()]  # each row's own
        self.width = max(widths)
        if self.width > self.capacity:
            self._grow(max(2 * self.capacity, self.width))
        columns = torch.arange(self.width, device=self.lengths.device)
        self.step_mask = (columns[None] <= self.lengths[:, None])[:, None, None]
        self.runs, first = [], 0
        for width, rows in itertools.groupby(widths):
            stop = first + len(list(rows))
            self.runs.append((first, stop, width))
            first = stop

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store one step's keys and values (B, H_kv, 1, D) of `layer`, each row's in its own
        next column; the layer's keys and values with them, (B, H_kv, width, D) views."""
        keys, values = self.layer_keys[layer], self.layer_values[layer]
        keys[self.row_index, :, self.lengths] = k[:, :, 0]  # (B, H_kv, D) into (B, H_kv, C, D)
        values[self.row_index, :, self.lengths] = v[:, :, 0]
        return keys.narrow(2, 0, self.width), values.narrow(2, 0, self.width)

    def attention_mask(self) -> torch.Tensor:
        """The open step's SDPA mask (B, 1, 1, width) bool: always one, so a row alone takes
        the same kernel path as in a batch."""
        assert self.step_mask is not None, "open_column first"
        return self.step_mask

    def close_column(self) -> None:
        self.lengths = self.lengths + 1
        self.step_mask = None

    # -- rows joining and leaving (DecodeBatch) ----------------------------------------------
    def _grow(self, capacity: int) -> None:
        L, B, H, C, D = self.keys.shape
        keys = self.keys.new_zeros(L, B, H, aligned(capacity), D)
        values = self.values.new_zeros(L, B, H, aligned(capacity), D)
        keys[:, :, :, :C], values[:, :, :, :C] = self.keys, self.values
        self.keys, self.values = keys, values
        self._views()

    def extend(self, other: StaticKV) -> StaticKV:
        """`self`'s rows then `other`'s, in a buffer as wide as the wider."""
        capacity = max(self.capacity, other.capacity)
        L, B, H, _, D = self.keys.shape
        keys = self.keys.new_zeros(L, B + other.batch_size, H, capacity, D)
        values = self.values.new_zeros(L, B + other.batch_size, H, capacity, D)
        keys[:, :B, :, : self.capacity], values[:, :B, :, : self.capacity] = self.keys, self.values
        keys[:, B:, :, : other.capacity] = other.keys
        values[:, B:, :, : other.capacity] = other.values
        return StaticKV(keys, values, torch.cat([self.lengths, other.lengths]))

    def select(self, rows: list[int]) -> StaticKV:
        """Only `rows` (in this order)."""
        index = torch.tensor(rows, device=self.keys.device)
        return StaticKV(
            self.keys.index_select(1, index),
            self.values.index_select(1, index),
            self.lengths.index_select(0, index),
        )

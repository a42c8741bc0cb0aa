"""A pre-allocated KV cache for decoding: every layer's keys and values in one buffer that a
decoding step writes one column of, instead of a Hugging Face `DynamicCache` that concatenates
(re-allocates and copies) the whole cache of every layer at every step.

Layout, as in `decode_steps` and `DecodeBatch`: rows are left-padded, so columns `[0, n)` hold
the cache and every row's newest position is column `n - 1`; `mask` marks a row's real columns
(padding is masked and takes no position). Columns `[n, capacity)` are free space for the next
steps; when they run out the buffer grows (doubles), which `decode_steps` never needs (it sizes
the buffer for the prompt and its whole answer) and a long-lived `DecodeBatch` needs rarely.
"""

from __future__ import annotations

import torch


class StaticKV:
    """Keys and values (L, B, H_kv, C, D) of C columns, the first `n` used; `mask` (B, C) bool.
    Padding columns hold zeros or the prefill's values, never garbage: a masked column still
    meets a zero attention weight, and 0 x NaN would be NaN."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, n: int):
        self.keys, self.values = keys, values  # (L, B, H_kv, C, D)
        self.mask = mask  # (B, C) bool
        self.n = n
        self._views()

    def _views(self) -> None:
        # Per-layer views made once per allocation, not per step: indexing costs a dispatch.
        self.layer_keys = self.keys.unbind(0)  # L x (B, H_kv, C, D)
        self.layer_values = self.values.unbind(0)
        self.padded = not bool(self.mask[:, : self.n].all())  # a python bool, fixed while rows are

    @classmethod
    def from_layers(
        cls, layers: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor, capacity: int
    ) -> StaticKV:
        """A buffer of `capacity` columns holding `layers` (per layer keys, values (B, H_kv, T, D),
        e.g. a prefill's `DynamicCache`) and their mask (B, T), in columns [0, T)."""
        k0 = layers[0][0]
        B, H, T, D = k0.shape
        shape = (len(layers), B, H, max(capacity, T), D)
        keys = k0.new_zeros(shape)
        values = k0.new_zeros(shape)
        for i, (k, v) in enumerate(layers):
            keys[i, :, :, :T] = k
            values[i, :, :, :T] = v
        full = torch.zeros(B, shape[3], dtype=torch.bool, device=mask.device)
        full[:, :T] = mask.bool()
        return cls(keys, values, full, T)

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer the used keys and values (B, H_kv, n, D) (views)."""
        n = self.n
        return [
            (k[:, :, :n], v[:, :, :n])
            for k, v in zip(self.layer_keys, self.layer_values, strict=True)
        ]

    def used_mask(self) -> torch.Tensor:  # (B, n) bool view
        return self.mask[:, : self.n]

    # -- a decoding step ---------------------------------------------------------------------
    def open_column(self) -> None:
        """Make room for one more column (every row real there); `write` fills it per layer
        and `close_column` commits it."""
        if self.n == self.capacity:
            self._grow(2 * self.capacity)
        self.mask[:, self.n] = True

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store one step's keys and values (B, H_kv, 1, D) of `layer` in the open column; the
        layer's keys and values with it, (B, H_kv, n + 1, D) views."""
        n = self.n
        keys, values = self.layer_keys[layer], self.layer_values[layer]
        keys.narrow(2, n, 1).copy_(k)
        values.narrow(2, n, 1).copy_(v)
        return keys.narrow(2, 0, n + 1), values.narrow(2, 0, n + 1)

    def attention_mask(self) -> torch.Tensor | None:
        """The SDPA mask (B, 1, 1, n + 1) bool of a step, or None when no row is padded: the rule
        transformers' `create_causal_mask` applies, so SDPA takes the same kernel path."""
        return self.mask[:, None, None, : self.n + 1] if self.padded else None

    def close_column(self) -> None:
        self.n += 1

    # -- rows joining and leaving (DecodeBatch) ----------------------------------------------
    def _grow(self, capacity: int) -> None:
        L, B, H, C, D = self.keys.shape
        keys, values = (
            self.keys.new_zeros(L, B, H, capacity, D),
            self.values.new_zeros(L, B, H, capacity, D),
        )
        keys[:, :, :, :C], values[:, :, :, :C] = self.keys, self.values
        mask = self.mask.new_zeros(B, capacity)
        mask[:, :C] = self.mask
        self.keys, self.values, self.mask = keys, values, mask
        self._views()

    def extend(self, other: StaticKV) -> StaticKV:
        """`self`'s rows then `other`'s, on n = the larger used width: the narrower is padded on
        the left with masked zeros, so every row's newest column stays the last used one."""
        n = max(self.n, other.n)
        capacity = max(self.capacity, other.capacity, n + 1)
        L, B, H, _, D = self.keys.shape
        rows = B + other.batch_size
        keys = self.keys.new_zeros(L, rows, H, capacity, D)
        values = self.values.new_zeros(L, rows, H, capacity, D)
        mask = self.mask.new_zeros(rows, capacity)
        for part, start in ((self, 0), (other, B)):
            stop, left = start + part.batch_size, n - part.n
            keys[:, start:stop, :, left:n] = part.keys[:, :, :, : part.n]
            values[:, start:stop, :, left:n] = part.values[:, :, :, : part.n]
            mask[start:stop, left:n] = part.mask[:, : part.n]
        return StaticKV(keys, values, mask, n)

    def select(self, rows: list[int]) -> StaticKV:
        """Only `rows` (in this order), and no leading column that none of them uses."""
        index = torch.tensor(rows, device=self.mask.device)
        mask = self.mask.index_select(0, index)  # (B', C)
        first = int(mask[:, : self.n].any(dim=0).nonzero()[0])  # the first column still used
        n = self.n - first
        keys = self.keys.index_select(1, index)  # (L, B', H_kv, C, D)
        values = self.values.index_select(1, index)
        if first:  # shift the used columns to the front
            keys[:, :, :, :n] = keys[:, :, :, first : self.n].clone()
            values[:, :, :, :n] = values[:, :, :, first : self.n].clone()
            mask[:, :n] = mask[:, first : self.n].clone()
            mask[:, n:] = False
        return StaticKV(keys, values, mask, n)

"""Exact overlap of texts by shared character windows (shingles), hashed in numpy.

A window's hash is a polynomial in its code points modulo 2**64 with an odd base, computed for
all windows of a text at once from prefix sums: with P[k] = sum_{j<k} c[j] B^j, the window at i
hashes to (P[i + w] - P[i]) B^-i (B is invertible modulo 2**64 because it is odd). uint64
arithmetic wraps, which is exactly the modulus. Natural text does not collide by chance
(2**-64 per pair of distinct windows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WINDOW = 64
_BASE = 0x9E3779B97F4A7C15  # odd
_INVERSE = pow(_BASE, -1, 1 << 64)  # exists because the base is odd
_POWERS: dict[int, np.ndarray] = {}  # base -> [base^0, base^1, ...], grown on demand


def normalise_text(text: str) -> str:
    """Lower case, whitespace collapsed: the form windows are compared in."""
    return " ".join(text.split()).lower()


def _powers(base: int, n: int) -> np.ndarray:
    """`base**i mod 2**64` for i < n (uint64)."""
    table = _POWERS.get(base)
    if table is None or table.size < n:
        size = max(n, 2 * (0 if table is None else table.size), 4096)
        steps = np.full(size, base, dtype=np.uint64)
        steps[0] = 1
        table = np.cumprod(steps, dtype=np.uint64)
        _POWERS[base] = table
    return table[:n]


def window_hashes(text: str, width: int = WINDOW) -> np.ndarray:
    """The hash of every `width`-character window of `text`, in order (`(n,)` uint64, empty
    when the text is shorter than `width`)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = codes.size - width + 1
    if n <= 0:
        return np.zeros(0, dtype=np.uint64)
    prefix = np.zeros(codes.size + 1, dtype=np.uint64)
    np.cumsum(codes * _powers(_BASE, codes.size), dtype=np.uint64, out=prefix[1:])
    inverse = _powers(_INVERSE, n)
    return (prefix[width:] - prefix[:n]) * inverse


class WindowSet:
    """Every window of the texts added; `shares_window` asks whether a text has one of them."""

    def __init__(self, width: int = WINDOW) -> None:
        self.width = width
        self._table = np.zeros(0, dtype=np.uint64)  # sorted, unique
        self._pending: list[np.ndarray] = []

    def add(self, text: str) -> None:
        self._pending.append(window_hashes(text, self.width))

    def __len__(self) -> int:
        return self._sorted().size

    def _sorted(self) -> np.ndarray:
        if self._pending:
            merged = np.sort(np.concatenate([self._table, *self._pending]))
            self._table = merged[np.concatenate(([True], merged[1:] != merged[:-1]))]
            self._pending = []
        return self._table

    def sharing(self, texts: Sequence[str]) -> np.ndarray:
        """For each text, whether any of its windows is in the set (`(len(texts),)` bool)."""
        parts = [window_hashes(t, self.width) for t in texts]
        table = self._sorted()
        if not parts or not table.size:
            return np.zeros(len(parts), dtype=bool)
        owner = np.repeat(np.arange(len(parts)), [h.size for h in parts])
        hashes = np.concatenate(parts)
        order = np.argsort(hashes)  # sorted keys make searchsorted cache-friendly
        index = np.minimum(np.searchsorted(table, hashes[order]), table.size - 1)
        found = table[index] == hashes[order]
        shares = np.zeros(len(parts), dtype=bool)
        shares[owner[order[found]]] = True
        return shares

    def shares_window(self, text: str) -> bool:
        return bool(self.sharing([text])[0])

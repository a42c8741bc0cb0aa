"""numpy <-> Arrow for the chunk table's array columns, and the int8 state quantisation.

Vectorised: one concatenate per batch, never a loop per value. Shapes:

- retrieval vectors: (n, dim) <-> `fixed_size_list<T, dim>[n]`;
- float16 states: n arrays (n_i, d) <-> `list<fixed_size_list<float16, d>>[n]`;
- int8 states: n arrays (n_i, d) <-> (`list<fixed_size_list<int8, d>>[n]`,
  `list<float16>[n]` scales), with x ≈ q · scale per state (see `quantize_int8`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from extok_rag.errors import IndexStoreError

# --- retrieval vectors ---


def vectors_to_arrow(
    vectors: np.ndarray, value_type: pa.DataType | None = None
) -> pa.FixedSizeListArray:
    """(n, dim) float -> fixed_size_list<value_type, dim>[n] (float32, the default, or float16)."""
    value_type = value_type or pa.float32()
    flat = np.ascontiguousarray(vectors, dtype=value_type.to_pandas_dtype()).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, value_type), vectors.shape[1])


def vectors_from_arrow(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """fixed_size_list<T, dim>[n] -> (n, dim) float32 (exact for T = float16 or float32)."""
    array = _combine(column)
    flat = array.flatten().to_numpy(zero_copy_only=False)  # (n · dim,) T
    return flat.astype(np.float32, copy=False).reshape(len(array), dim)


# --- float16 states ---


def states_to_arrow(states: Sequence[np.ndarray], d: int) -> pa.ListArray:
    """n arrays of shape (n_i, d) float16 -> list<fixed_size_list<float16, d>>[n]."""
    lengths = np.fromiter((s.shape[0] for s in states), dtype=np.int64, count=len(states))
    offsets = np.zeros(len(states) + 1, dtype=np.int32)  # (n + 1,)
    np.cumsum(lengths, out=offsets[1:])
    if len(states):
        flat = np.concatenate([np.asarray(s, dtype=np.float16).reshape(-1) for s in states])
    else:
        flat = np.zeros(0, dtype=np.float16)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float16()), d)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def states_from_arrow(column: pa.ChunkedArray | pa.Array, d: int) -> list[np.ndarray]:
    """list<fixed_size_list<T, d>>[n] -> n read-only (n_i, d) views of dtype T."""
    array = _combine(column)
    if len(array) == 0:
        return []
    offsets = array.offsets.to_numpy()  # (n + 1,)
    offsets = offsets - offsets[0]  # a sliced array's offsets need not start at 0
    flat = array.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, d)  # (Σn_i, d)
    return np.split(flat, offsets[1:-1])


# --- int8 states ---


def quantize_int8(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float -> (q (n, d) int8, scales (n,) float16) with x ≈ q · scale per row:
    scale = max|x_row| / 127 rounded up to float16 (so no |q| exceeds 127), hence
    |x - q · scale| ≤ scale / 2. IndexStoreError if not finite or beyond float16's range."""
    x = np.asarray(states, dtype=np.float32)
    if not np.isfinite(x).all():
        raise IndexStoreError("states hold inf or NaN: they cannot be stored as int8")
    exact = np.abs(x).max(axis=1, initial=0.0) / np.float32(127)  # (n,) float32
    with np.errstate(over="ignore"):  # beyond float16's range becomes inf, refused below
        scales = exact.astype(np.float16)
    low = scales.astype(np.float32) < exact
    scales[low] = np.nextafter(scales[low], np.float16(np.inf))
    if not np.isfinite(scales).all():
        raise IndexStoreError("states exceed float16's range: they cannot be stored as int8")
    divisor = np.where(scales > 0, scales.astype(np.float32), np.float32(1))[:, None]  # (n, 1)
    q = np.clip(np.rint(x / divisor), -127, 127).astype(np.int8)
    return q, scales


def dequantize_int8(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(n, d) int8, (n,) float16 or float32 -> (n, d) float32."""
    return q.astype(np.float32) * np.asarray(scales, dtype=np.float32)[:, None]


def int8_states_to_arrow(states: Sequence[np.ndarray], d: int) -> tuple[pa.ListArray, pa.ListArray]:
    """n arrays (n_i, d) -> (list<fixed_size_list<int8, d>>[n], list<float16>[n] scales)."""
    quantized = [quantize_int8(np.asarray(s).reshape(-1, d)) for s in states]
    offsets = np.zeros(len(states) + 1, dtype=np.int32)  # (n + 1,)
    np.cumsum([q.shape[0] for q, _ in quantized], out=offsets[1:])
    flat = np.concatenate([q.reshape(-1) for q, _ in quantized]) if quantized else np.zeros(0)
    flat_scales = np.concatenate([sc for _, sc in quantized]) if quantized else np.zeros(0)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(np.int8), pa.int8()), d)
    scales = pa.array(flat_scales.astype(np.float16), pa.float16())  # (Σn_i,)
    offsets_array = pa.array(offsets)
    return (
        pa.ListArray.from_arrays(offsets_array, inner),
        pa.ListArray.from_arrays(offsets_array, scales),
    )


def int8_states_from_arrow(
    states: pa.ChunkedArray | pa.Array, scales: pa.ChunkedArray | pa.Array, d: int
) -> list[np.ndarray]:
    """The columns of `int8_states_to_arrow` -> n dequantised (n_i, d) float32 arrays."""
    q = states_from_arrow(states, d)  # the same list layout, int8 values
    scale_array = _combine(scales)
    if len(scale_array) == 0:
        return []
    offsets = scale_array.offsets.to_numpy()  # (n + 1,)
    flat = scale_array.flatten().to_numpy(zero_copy_only=False)  # (Σn_i,)
    per_chunk = np.split(flat, offsets[1:-1] - offsets[0])
    return [dequantize_int8(qi, si) for qi, si in zip(q, per_chunk, strict=True)]


def _combine(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

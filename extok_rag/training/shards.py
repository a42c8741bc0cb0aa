"""Token shards: documents -> one token stream -> fixed-length sequences on disk.

A shard is a flat little-endian `uint16` array of `n * seq_len` token ids (vocabularies up to
65,536), read back as an `(n, seq_len)` memmap by `PackedSequences`. Documents are separated
by one separator token; a sequence may span a separator (as in GPT-style pre-training packing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

SHARD_DTYPE = np.uint16


class PackedSequences:
    """Fixed-length token sequences stored in a shard file (see module docstring).

    `seqs[i]` is an `np.int64` array of shape `(seq_len,)`; `len(seqs)` is the count.
    """

    def __init__(self, path: str | Path, seq_len: int) -> None:
        self.path = Path(path)
        self.seq_len = int(seq_len)
        size = self.path.stat().st_size // np.dtype(SHARD_DTYPE).itemsize
        if size % self.seq_len:
            raise ValueError(f"{self.path}: {size} tokens is not a multiple of {self.seq_len}")
        n = size // self.seq_len
        self._data = (
            np.memmap(self.path, dtype=SHARD_DTYPE, mode="r", shape=(n, self.seq_len))
            if n
            else np.zeros((0, self.seq_len), dtype=SHARD_DTYPE)
        )

    def __len__(self) -> int:
        return self._data.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:  # (seq_len,) int64
        if not -len(self) <= index < len(self):
            raise IndexError(f"sequence {index} out of range ({len(self)} sequences)")
        return np.asarray(self._data[index], dtype=np.int64)

    @property
    def num_tokens(self) -> int:
        return len(self) * self.seq_len


def pack_documents(
    docs: Iterable[Sequence[int]], separator_id: int, seq_len: int
) -> tuple[np.ndarray, int]:
    """Concatenate documents, each followed by `separator_id`, and cut the stream into rows.

    Returns `(rows, dropped)`: rows is `(n, seq_len)` uint16; `dropped` counts the tail tokens
    that did not fill a last row."""
    parts = [np.asarray([*doc, separator_id], dtype=np.int64) for doc in docs]
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if stream.size and stream.max() > np.iinfo(SHARD_DTYPE).max:
        raise ValueError(f"token id {stream.max()} does not fit {np.dtype(SHARD_DTYPE).name}")
    n = stream.size // seq_len
    rows = stream[: n * seq_len].astype(SHARD_DTYPE).reshape(n, seq_len)
    return rows, int(stream.size - n * seq_len)


def write_shard(path: Path, rows: np.ndarray) -> str:
    """Write rows atomically (temp file + rename); return the file's sha256."""
    tmp = path.with_name(path.name + ".tmp")
    np.ascontiguousarray(rows, dtype=SHARD_DTYPE).astype("<u2").tofile(tmp)
    tmp.replace(path)
    return file_sha256(path)


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()

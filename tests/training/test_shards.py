"""Packing and the `PackedSequences` loader the trainer reads."""

from __future__ import annotations

import numpy as np
import pytest

from extok_rag.training import PackedSequences
from extok_rag.training.shards import pack_documents, write_shard


def test_pack_joins_documents_with_separator_and_drops_the_tail():
    rows, dropped = pack_documents([[5, 6, 7], [8, 9], [10, 11, 12, 13]], separator_id=0, seq_len=4)
    assert rows.dtype == np.uint16
    assert rows.tolist() == [[5, 6, 7, 0], [8, 9, 0, 10], [11, 12, 13, 0]]
    assert dropped == 0
    rows, dropped = pack_documents([[1, 2, 3, 4, 5]], separator_id=0, seq_len=4)
    assert rows.shape == (1, 4) and dropped == 2


def test_pack_rejects_ids_beyond_uint16():
    with pytest.raises(ValueError, match="does not fit"):
        pack_documents([[70_000]], separator_id=0, seq_len=2)


def test_packed_sequences_round_trip(tmp_path):
    rows = np.arange(3 * 8, dtype=np.uint16).reshape(3, 8) + 49_000
    digest = write_shard(tmp_path / "train.bin", rows)
    assert len(digest) == 64 and not (tmp_path / "train.bin.tmp").exists()
    seqs = PackedSequences(tmp_path / "train.bin", seq_len=8)
    assert len(seqs) == 3 and seqs.num_tokens == 24
    assert seqs[1].dtype == np.int64 and seqs[1].shape == (8,)
    assert seqs[1].tolist() == rows[1].tolist()
    assert seqs[-1].tolist() == rows[2].tolist()
    with pytest.raises(IndexError):
        seqs[3]


def test_packed_sequences_checks_the_length_and_allows_empty(tmp_path):
    write_shard(tmp_path / "odd.bin", np.zeros((1, 6), dtype=np.uint16))
    with pytest.raises(ValueError, match="not a multiple"):
        PackedSequences(tmp_path / "odd.bin", seq_len=4)
    write_shard(tmp_path / "empty.bin", np.zeros((0, 4), dtype=np.uint16))
    assert len(PackedSequences(tmp_path / "empty.bin", seq_len=4)) == 0

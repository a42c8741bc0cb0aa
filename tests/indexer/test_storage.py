"""Storage hygiene through real index runs: compaction, old table versions deleted except the
previous commit's, a row-id index, and rollback still working after a cleanup."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from extok_rag.indexes import ChunkTable, read_manifest
from extok_rag.indexing import build_index, open_index

from .test_indexer import Crash, assert_same_rows, rows


@pytest.fixture
def small(settings):
    """The small corpus, compacting at every commit."""
    return replace(settings, exclude=("big.md",), compact_fragments=1)


def rewrite(corpus, n: int) -> None:
    (corpus / "a.md").write_text(f"Alpha, version {n}.\n\n" + "Words that change. " * (20 + n))
    time.sleep(1.2)  # versions less than a second older than the kept one are kept too


def test_runs_compact_and_keep_exactly_one_previous_commit(corpus, tmp_path, models, small):
    idx = tmp_path / "idx"
    build_index(corpus, idx, models, small)
    first = read_manifest(idx).table_version
    pinned = open_index(idx)  # a reader opened before the next commit
    expected = pinned.table.fetch(pinned.table.vectors()[0])
    rewrite(corpus, 1)
    build_index(corpus, idx, models, small)
    table = ChunkTable.open(idx)
    assert table.fragments() == 1
    assert sorted(i.columns for i in table._table.list_indices()) == [["row_id"], ["text"]]
    assert table.has_version(first)  # the previous commit stays readable ...
    again = pinned.table.fetch(pinned.table.vectors()[0])
    assert [c.text for c in again] == [c.text for c in expected]
    second = read_manifest(idx).table_version
    rewrite(corpus, 2)
    build_index(corpus, idx, models, small)
    table = ChunkTable.open(idx)
    assert not table.has_version(first) and table.has_version(second)  # ... for one commit
    assert min(v["version"] for v in table._table.list_versions()) > first


def test_rollback_after_cleanup_restores_the_manifest_version(
    corpus, tmp_path, models, small, monkeypatch
):
    idx = tmp_path / "idx"
    build_index(corpus, idx, models, small)
    rewrite(corpus, 1)
    build_index(corpus, idx, models, small)
    before = rows(idx)
    rewrite(corpus, 2)
    for i in range(3):
        (corpus / f"more{i}.md").write_text(f"Document {i}. " * 60)
    add, calls = ChunkTable.add, []

    def crash_on_second_add(self, records):
        calls.append(1)
        if len(calls) == 2:
            raise Crash
        return add(self, records)

    monkeypatch.setattr(ChunkTable, "add", crash_on_second_add)
    with pytest.raises(Crash):
        build_index(corpus, idx, models, small)
    monkeypatch.setattr(ChunkTable, "add", add)
    (idx / "pending.json").unlink()  # unknown writes: the next run must roll them back
    assert rows(idx).keys() == before.keys()
    build_index(corpus, idx, models, small)
    build_index(corpus, tmp_path / "clean", models, small)
    assert_same_rows(rows(idx), rows(tmp_path / "clean"))


def test_compaction_waits_for_the_fragment_threshold(corpus, tmp_path, models, settings):
    idx = tmp_path / "idx"
    settings = replace(settings, compact_fragments=3)
    build_index(corpus, idx, models, settings)  # commit_tokens 512: three table commits
    table = ChunkTable.open(idx)
    assert table.fragments() == 1 and table.count() == read_manifest(idx).counts.chunks
    (corpus / "new.md").write_text("One more small document.\n")
    build_index(corpus, idx, models, settings)  # a small update: no rewrite of the table
    assert ChunkTable.open(idx).fragments() == 2
    assert open_index(idx).table.count() == read_manifest(idx).counts.chunks

"""Vector index: exact flat search, HNSW recall, atomic save/load, corrupt files."""

from __future__ import annotations

import numpy as np
import pytest

from extok_rag.errors import IndexStoreError
from extok_rag.indexes.vectors import VectorIndex

DIM = 32


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    row_ids = rng.permutation(10_000)[:2000].astype(np.int64) + 1000  # sparse, unordered ids
    return row_ids, unit_vectors(rng, 2000), unit_vectors(rng, 50)


def test_flat_self_query_is_exact_top1(data):
    row_ids, vectors, _ = data
    index = VectorIndex.build(row_ids, vectors)
    assert index.kind == "flat" and len(index) == 2000 and index.dim == DIM
    found, scores = index.search(vectors[:100], 5)
    assert found.shape == scores.shape == (100, 5)
    assert (found[:, 0] == row_ids[:100]).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_hnsw_recall_against_flat(data):
    row_ids, vectors, queries = data
    flat = VectorIndex.build(row_ids, vectors)
    hnsw = VectorIndex.build(row_ids, vectors, hnsw_threshold=1000, ef_search=128)
    assert hnsw.kind == "hnsw"
    exact, _ = flat.search(queries, 10)
    approx, _ = hnsw.search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    self_top1, _ = hnsw.search(vectors[:100], 1)
    assert (self_top1[:, 0] == row_ids[:100]).mean() >= 0.99


def test_n_larger_than_index_and_empty_index():
    rng = np.random.default_rng(1)
    index = VectorIndex.build(np.array([7, 9]), unit_vectors(rng, 2))
    found, scores = index.search(unit_vectors(rng, 3), 10)
    assert found.shape == (3, 2) and (found >= 0).all()
    empty = VectorIndex.empty(DIM)
    found, scores = empty.search(unit_vectors(rng, 3), 10)
    assert found.shape == scores.shape == (3, 0)


def test_add_after_build(data):
    row_ids, vectors, _ = data
    index = VectorIndex.build(row_ids[:1000], vectors[:1000])
    index.add(row_ids[1000:], vectors[1000:])
    found, _ = index.search(vectors[1500:1510], 1)
    assert (found[:, 0] == row_ids[1500:1510]).all()
    with pytest.raises(IndexStoreError, match="cannot add"):
        index.add(row_ids[:3], vectors[:2])


@pytest.mark.parametrize("threshold", [50_000, 1000], ids=["flat", "hnsw"])
def test_save_load_round_trip_ignores_leftover_temp(tmp_path, data, threshold):
    row_ids, vectors, queries = data
    index = VectorIndex.build(row_ids, vectors, hnsw_threshold=threshold)
    path = tmp_path / "vectors.faiss"
    (tmp_path / "vectors.faiss.tmp").write_bytes(b"half a file from a crashed save")
    index.save(path)
    assert not (tmp_path / "vectors.faiss.tmp").exists()
    (tmp_path / "vectors.faiss.tmp").write_bytes(b"another crash, after the save")
    loaded = VectorIndex.load(path)
    assert loaded.kind == index.kind and len(loaded) == len(index)
    for a, b in zip(index.search(queries, 10), loaded.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file_is_one_line_index_store_error(tmp_path, data, damage):
    row_ids, vectors, _ = data
    path = tmp_path / "vectors.faiss"
    VectorIndex.build(row_ids, vectors).save(path)
    content = path.read_bytes()
    damaged = {"garbage": b"not a faiss index", "truncated": content[: len(content) // 2]}
    path.write_bytes(damaged.get(damage, b""))
    with pytest.raises(IndexStoreError, match="is corrupt") as info:
        VectorIndex.load(path)
    assert "\n" not in str(info.value) and ".cpp" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(IndexStoreError, match="no vector index"):
        VectorIndex.load(tmp_path / "nope.faiss")


def test_gpu_copy_used_for_flat_search_and_never_saved(tmp_path, data, monkeypatch):
    """The GPU path's bookkeeping, with a CPU clone standing in for faiss's GPU copy."""
    import faiss

    from extok_rag.indexes import vectors as vectors_module

    copies = []

    def fake_to_gpu(resources, device, index):
        copies.append(faiss.clone_index(index))
        return copies[-1]

    monkeypatch.setattr(vectors_module, "_num_gpus", lambda faiss: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", fake_to_gpu, raising=False)
    row_ids, vectors, queries = data
    index = VectorIndex.build(row_ids[:1000], vectors[:1000])
    index.search(queries, 3)
    index.search(queries, 3)
    assert len(copies) == 1  # made once, reused
    index.add(row_ids[1000:], vectors[1000:])
    found, _ = index.search(vectors[1500:1501], 1)
    assert len(copies) == 2 and found[0, 0] == row_ids[1500]  # the copy follows adds
    index.save(tmp_path / "v.faiss")
    assert len(VectorIndex.load(tmp_path / "v.faiss")) == 2000
    hnsw = VectorIndex.build(row_ids, vectors, hnsw_threshold=1000)
    hnsw.search(queries, 3)
    assert len(copies) == 2  # FAISS has no GPU HNSW: it stays on the CPU


@pytest.mark.parametrize("threshold", [10**9, 1000], ids=["flat", "hnsw"])
def test_float16_index_scores_as_float32_over_float16_vectors(data, tmp_path, threshold):
    """A float16 index (int8-state indexes) holds the vectors at float16: its scores are the
    float32 index's over the same float16-rounded vectors, and it survives save/load."""
    row_ids, vectors, queries = data
    rounded = vectors.astype(np.float16).astype(np.float32)
    half = VectorIndex.build(row_ids, vectors, hnsw_threshold=threshold, precision="float16")
    half.save(tmp_path / "v.faiss")
    loaded = VectorIndex.load(tmp_path / "v.faiss")
    assert (loaded.precision, loaded.kind) == ("float16", half.kind)
    assert VectorIndex.build(row_ids, vectors).precision == "float32"
    exact = VectorIndex.build(row_ids, rounded, hnsw_threshold=10**9)
    found, scores = loaded.search(queries, 4)
    want_found, want_scores = exact.search(queries, 4)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    if half.kind == "flat":  # (HNSW's graph links cost the same at either precision)
        assert (found == want_found).all()
        assert (tmp_path / "v.faiss").stat().st_size < len(row_ids) * (2 * DIM + 8) + 4096

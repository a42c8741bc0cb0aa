"""The retrieval embedder equals sentence-transformers' all-MiniLM-L6-v2 pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from extok_rag.config import RuntimeConfig
from extok_rag.models.embedder import Embedder, length_batches

TEXTS = ["A short one.", "Extensible tokenization compresses retrieved chunks " * 20, "Mid " * 40]


def test_length_batches_respect_the_budget():
    lengths = [1, 2, 3, 8, 8, 9, 30]
    batches = length_batches(lengths, 16)
    assert [i for b in batches for i in b] == list(range(7))
    assert all(len(b) * max(lengths[i] for i in b) <= 16 or len(b) == 1 for b in batches)


def test_tiny_embedder_gives_unit_vectors_independent_of_batching(tiny_embedder_dir):
    emb = Embedder.load(tiny_embedder_dir, RuntimeConfig(device="cpu", dtype="float32"))
    together = emb.embed(TEXTS)
    alone = np.stack([emb.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.integration
def test_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from extok_rag.models.defaults import resolve_embedder

    path = resolve_embedder().path
    expected = SentenceTransformer(str(path), device="cpu").encode(TEXTS)
    fp32 = Embedder.load(None, RuntimeConfig(device="cpu", dtype="float32")).embed(TEXTS)
    np.testing.assert_allclose(fp32, expected, atol=2e-5)
    bf16 = Embedder.load(None, RuntimeConfig(device="cpu")).embed(TEXTS)
    assert (np.sum(bf16 * expected, axis=1) > 0.995).all()

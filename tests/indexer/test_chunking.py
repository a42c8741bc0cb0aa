"""Chunking: exact token counts, stable ids, full coverage; the stride property of downscale."""

from __future__ import annotations

import pytest
import torch

from extok_rag.chunking import Chunker, ChunkingConfig, chunk_id
from extok_rag.models.extensible_tokenizer import downscale

TEXT = "".join(
    f"Paragraph {i}. It has two sentences, the second one longer than the first.\n\n"
    for i in range(30)
)


@pytest.fixture
def hf_tokenizer(tiny_llm):
    return tiny_llm.tokenizer


@pytest.mark.parametrize("splitter", ["tokens", "sentence"])
def test_chunks_fit_and_cover_the_text(hf_tokenizer, splitter):
    chunks = Chunker(hf_tokenizer, ChunkingConfig(64, splitter)).split("doc.md", TEXT)
    assert all(0 < c.n_tokens <= 64 for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks).replace(" ", "").replace("\n", "") == TEXT.replace(
        " ", ""
    ).replace("\n", "")
    for c in chunks:
        assert hf_tokenizer.decode(c.token_ids.tolist()).strip() == c.text


def test_token_windows_prefer_paragraph_ends(hf_tokenizer):
    # paragraphs are ~74 tokens: a 160-token window has a paragraph end in its last quarter
    chunks = Chunker(hf_tokenizer, ChunkingConfig(160)).split("doc.md", TEXT)
    assert all(c.text.endswith(".") and c.n_tokens > 120 for c in chunks[:-1])


def test_ids_are_stable_and_content_addressed(hf_tokenizer):
    chunker = Chunker(hf_tokenizer, ChunkingConfig(64))
    a, b = chunker.split("doc.md", TEXT), chunker.split("doc.md", TEXT)
    assert [c.chunk_id for c in a] == [c.chunk_id for c in b]
    assert a[0].chunk_id == chunk_id("doc.md", 0, a[0].content_hash)
    edited = chunker.split("doc.md", TEXT.replace("Paragraph 0.", "Paragraph zero."))
    assert edited[0].chunk_id != a[0].chunk_id
    assert chunker.split("other.md", TEXT)[0].chunk_id != a[0].chunk_id
    assert chunker.split("doc.md", "  \n\n ") == []


@pytest.mark.parametrize("s", [1, 2, 4])
def test_downscale_of_stored_stride_equals_direct_downscale(s):
    """Stored at stride s, down-scaled again by k/s at query time == down-scaled by k."""
    for length in [*range(1, 70), 128, 192, 256]:  # every tail case, and full chunk lengths
        x = torch.randn(length, 3)
        for k in (s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s):
            twice = downscale(downscale(x, s), k // s)
            assert torch.equal(twice, downscale(x, k)), (length, s, k)


@pytest.mark.parametrize("s", [1, 2, 4])
def test_mean_of_stored_window_means_is_the_window_mean_when_windows_are_full(s):
    """Mean pooling stored at stride s, pooled again by k/s == pooled by k, for every chunk
    whose length is a multiple of s; otherwise only the last window differs (its short last
    s-window weighs as much as a full one)."""
    for length in [*range(1, 70), 256]:
        x = torch.randn(length, 3)
        for k in (s, 2 * s, 4 * s, 8 * s):
            twice = downscale(downscale(x, s, "mean"), k // s, "mean")
            direct = downscale(x, k, "mean")
            upto = None if length % s == 0 else -1
            torch.testing.assert_close(twice[:upto], direct[:upto], msg=f"{length} {s} {k}")

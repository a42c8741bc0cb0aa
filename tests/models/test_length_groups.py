"""Rows batched by length: an exact partition that minimises padding plus a cost per batch,
and losses / encodings that do not depend on how rows were grouped."""

import itertools
import random

import pytest
import torch

from extok_rag.config import TokenizerConfig
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.length_groups import length_groups, padded_positions
from extok_rag.models.mixed_input import EmbeddingSegment, TokenSegment
from extok_rag.training.objective import row_losses


def best_by_search(lengths: list[int], overhead: int) -> int:
    """The least cost over every cut of the sorted lengths into runs."""
    s = sorted(lengths, reverse=True)
    best = None
    for cuts in itertools.product([False, True], repeat=len(s) - 1):
        groups, start = [], 0
        for i, cut in enumerate(cuts, start=1):
            if cut:
                groups.append(s[start:i])
                start = i
        groups.append(s[start:])
        cost = sum(len(g) * g[0] + overhead for g in groups)
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_groups_partition_the_rows_at_the_least_cost(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([5, 40, 41, 200]) + rng.randint(0, 9) for _ in range(rng.randint(1, 9))]
    overhead = rng.choice([0, 30, 300, 10_000])
    groups = length_groups(lengths, overhead)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    cost = padded_positions(lengths, groups) + overhead * len(groups)
    assert cost == best_by_search(lengths, overhead)


def test_no_overhead_means_no_padding_and_a_large_one_one_batch():
    lengths = [3, 9, 3, 7, 9, 1]
    assert padded_positions(lengths, length_groups(lengths, 0)) == sum(lengths)
    assert length_groups(lengths, 10**9) == [[1, 4, 3, 0, 2, 5]]
    assert length_groups([], 0) == []


def mixed_rows(seed: int) -> list:
    """Rows as a training micro-step makes them: embeddings of varied length, scored tokens."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for m, n in [(40, 6), (3, 9), (25, 4), (2, 12), (40, 5), (11, 7)]:
        embeds = torch.randn(m, 64, generator=g) * 0.02
        ids = torch.randint(3, 259, (n,), generator=g)
        rows.append([EmbeddingSegment(embeds), TokenSegment(ids)])
    return rows


def test_row_losses_do_not_depend_on_the_grouping(tiny_llm):
    rows = mixed_rows(0)
    one = row_losses(tiny_llm, rows, overhead=10**9)  # one padded batch, as before
    many = row_losses(tiny_llm, rows, overhead=0)  # a batch per distinct length
    assert len(length_groups([len(r[0]) + len(r[1]) for r in rows], 0)) > 2
    assert torch.equal(one.count, many.count)
    torch.testing.assert_close(many.nll, one.nll, atol=1e-4, rtol=1e-5)


def test_gradients_do_not_depend_on_the_grouping(tiny_llm):
    grads = []
    for overhead in (10**9, 0):
        rows = mixed_rows(1)
        leaves = [r[0].embeds.requires_grad_() for r in rows]
        row_losses(tiny_llm, rows, overhead=overhead).mean().backward()
        grads.append([leaf.grad for leaf in leaves])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_encode_does_not_depend_on_the_grouping(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=2))
    g = torch.Generator().manual_seed(2)
    chunks = [torch.randint(3, 259, (n,), generator=g) for n in (30, 4, 17, 30, 2, 9)]
    one, many = tok.encode(chunks, overhead=10**9), tok.encode(chunks, overhead=0)
    for a, b, c in zip(one, many, chunks, strict=True):
        assert a.shape == b.shape == (len(c), 64)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

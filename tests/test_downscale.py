import pytest
import torch

from extok_rag.models.extensible_tokenizer import MergeTree, downscale, downscale_indices


@pytest.mark.parametrize(
    ("length", "k", "expected"),
    [
        (8, 2, [1, 3, 5, 7]),
        (8, 4, [3, 7]),
        (8, 8, [7]),
        (8, 1, list(range(8))),
        (10, 4, [3, 7, 9]),  # tail of 2 tokens: its last state is kept
        (3, 4, [2]),  # shorter than k: one embedding, the last state
        (33, 16, [15, 31, 32]),
    ],
)
def test_strided_indices(length, k, expected):
    assert downscale_indices(length, k).tolist() == expected


@pytest.mark.parametrize(("length", "k"), [(512, 2), (512, 32), (500, 16), (7, 3), (1, 4)])
def test_strided_picks_those_states(length, k):
    states = torch.arange(length, dtype=torch.float32)[:, None].expand(length, 5)
    out = downscale(states, k)
    assert out.shape == (-(-length // k), 5)
    assert out[:, 0].tolist() == downscale_indices(length, k).float().tolist()


def test_strided_batched_matches_per_row():
    states = torch.randn(3, 20, 4)
    out = downscale(states, 6)
    for b in range(3):
        assert torch.equal(out[b], downscale(states[b], 6))


def test_mean_pools_each_window_and_the_short_tail():
    states = torch.arange(10, dtype=torch.float32)[:, None]
    assert downscale(states, 4, "mean")[:, 0].tolist() == [1.5, 5.5, 8.5]


def test_bad_k_and_method():
    with pytest.raises(ValueError):
        downscale_indices(8, 0)
    with pytest.raises(ValueError):
        downscale(torch.zeros(4, 2), 2, "random")  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [8, 16, 12])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_an_untrained_merge_tree_is_mean_pooling(length, k):
    states = torch.randn(3, length, 5)
    torch.testing.assert_close(MergeTree(5)(states, k), downscale(states, k, "mean"))


def test_a_trained_merge_tells_the_slots_of_a_window_apart():
    tree = MergeTree(4)
    with torch.no_grad():
        tree.levels[0].proj.weight.normal_()
    a, b = torch.randn(1, 4), torch.randn(1, 4)
    ab, ba = tree(torch.cat([a, b]), 2), tree(torch.cat([b, a]), 2)
    assert not torch.allclose(ab, ba)  # order within the window survives, unlike the mean
    torch.testing.assert_close(downscale(torch.cat([a, b]), 2, "mean"), (a + b) / 2)


def test_a_merge_tree_keeps_an_odd_tail_and_refuses_other_ks():
    states = torch.randn(5, 3)
    assert MergeTree(3)(states, 4).shape == (2, 3)
    torch.testing.assert_close(MergeTree(3)(states, 2)[-1], states[-1])
    for k in (3, 6, 64):
        with pytest.raises(ValueError, match="merge down-scaling serves"):
            MergeTree(3)(states, k)
    with pytest.raises(ValueError, match="has weights"):
        downscale(states, 2, "merge")

import pytest
import torch

from extok_rag.models.extensible_tokenizer import downscale, downscale_indices


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

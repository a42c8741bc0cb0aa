"""Host tensors reach the device unchanged, pinned and queued on a GPU, plain on a CPU."""

import pytest
import torch

from extok_rag.models.transfer import to_device


def test_on_a_cpu_it_is_a_plain_copy():
    t = torch.arange(10)
    assert to_device(t, torch.device("cpu")) is t.to("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_values_arrive_and_the_source_stays_usable():
    t = torch.arange(100_000)
    got = to_device(t, torch.device("cuda"))
    t.zero_()  # the pinned copy is the source of the transfer, not `t`
    assert torch.equal(got.cpu(), torch.arange(100_000))
    back = to_device(got, torch.device("cuda"))  # already there: returned as is
    assert back.data_ptr() == got.data_ptr()

"""The vocabulary head is handed packed rows: `logits_to_keep` slices of (B, T, d) reach it
with dense strides (torch's bf16 CPU matmul copies the whole head weight for a strided 3-D
input, pytorch#151934); one row's logits are the same bits as the model's own."""

import copy

import pytest
import torch
from conftest import tiny_llama, tiny_tokenizer

from extok_rag.models.llm import FrozenLLM, dense_strides


def test_dense_strides():
    assert dense_strides((2, 3, 4)) == (12, 4, 1)
    assert dense_strides((1, 1, 5)) == (5, 5, 1)
    assert dense_strides((3, 0, 2)) == (2, 2, 1)
    for shape in [(2, 3, 4), (1, 1, 5), (4, 1, 7)]:
        assert dense_strides(shape) == torch.empty(shape).stride()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("batch", [1, 3])
def test_head_reads_packed_rows(dtype, batch):
    """bf16 rows reach the head packed; float32 ones as the model slices them (fast there).
    One row's logits are the same bits as the model's own without the hook."""
    model = tiny_llama().to(dtype)
    stock = copy.deepcopy(model)
    llm = FrozenLLM.from_model(model, tiny_tokenizer(), "tiny")
    FrozenLLM.from_model(model, tiny_tokenizer(), "tiny")  # a second wrap adds no second hook
    seen = []
    head = llm.model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda _, args: seen.append(args[0].stride()))
    assert len(head._forward_pre_hooks) == 2
    torch.manual_seed(0)
    embeds = torch.randn(batch, 9, llm.hidden_size, dtype=dtype)
    with torch.inference_mode():
        for keep in (1, 4, 0):
            ours = llm.model(inputs_embeds=embeds, logits_to_keep=keep).logits
            theirs = stock(inputs_embeds=embeds, logits_to_keep=keep).logits
            assert ours.shape == (batch, keep or 9, len(tiny_tokenizer()))
            if batch == 1:
                assert torch.equal(ours, theirs)
            else:  # a batch's rows may round apart (bf16: one GEMM, not B; float32 as well)
                torch.testing.assert_close(ours, theirs)
            kept = keep or 9
            packed = seen[-1] == dense_strides((batch, kept, llm.hidden_size))
            assert packed == (dtype == torch.bfloat16 or kept == 9)
    handle.remove()

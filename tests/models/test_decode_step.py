"""The fast decoding step (`LlamaStep` over a `StaticKV` cache): a row's logits are the same
bits alone or in any batch, and its greedy tokens are the Hugging Face forward's (its logits up
to float noise): token and embedding prompts, float32 and bfloat16 (oneDNN-packed weights);
other models fall back."""

from __future__ import annotations

import pytest
import torch

from extok_rag.config import RuntimeConfig
from extok_rag.models.decode_step import ForwardStep, LlamaStep, decode_step, llama_supported
from extok_rag.models.generation import decode_steps
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.lora import add_lora
from extok_rag.models.static_kv import StaticKV


@pytest.fixture(scope="module")
def bf16_llm(tiny_llm_dir):
    return FrozenLLM.load(tiny_llm_dir, RuntimeConfig(device="cpu", dtype="bfloat16"))


def prompts(llm):
    """Rows of two attention widths (`StaticKV.runs`), out of length order (`decode_steps`
    keeps its cache longest first)."""
    torch.manual_seed(0)
    return [
        llm.chat_row(["Tell me a story about a cat."]),
        llm.chat_row(["Tell me a long story about a cat. " * 12]),
        llm.chat_row(["Context: ", torch.randn(5, llm.hidden_size).to(llm.dtype), " Short?"]),
        llm.chat_row(["A much longer question, padded less than the others are, surely?"]),
    ]


def run(llm, rows, steps: int, fast: bool) -> list[torch.Tensor]:
    """Every step's last-position logits (B, V), greedy tokens fed back."""
    seen = []

    def pick(logits):
        seen.append(logits.clone())
        return logits.argmax(-1)

    for _ in decode_steps(llm, rows, steps, pick, fast=fast):
        pass
    return seen


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_rows_logits_are_the_same_alone_and_in_a_batch(tiny_llm, bf16_llm, dtype):
    """Rows of different lengths (and embeddings) decoded together: every step's logits of
    each row equal those of the row decoded alone, bit for bit in bf16 (oneDNN's packed
    matmul gives a row the same bits at any batch size); in float32 `F.linear` (MKL) rounds
    a batch of one otherwise (~1e-7): float noise, the same tokens."""
    llm = tiny_llm if dtype == "float32" else bf16_llm
    assert isinstance(decode_step(llm.model), LlamaStep)
    rows = prompts(llm)
    together = run(llm, rows, 12, True)
    for i, row in enumerate(rows):
        for a, b in zip(together, run(llm, [row], 12, True), strict=True):
            if dtype == "bfloat16" and decode_step(llm.model).head.packed is not None:
                assert torch.equal(a[i], b[0])
            else:
                assert int(a[i].argmax()) == int(b[0].argmax())
                torch.testing.assert_close(a[i], b[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_greedy_tokens_are_the_forward_s(tiny_llm, bf16_llm, dtype):
    """The model's forward over the same cache (`ForwardStep`) lays the new column out
    otherwise: float noise in the logits, the same greedy tokens."""
    llm = tiny_llm if dtype == "float32" else bf16_llm
    rows = prompts(llm)
    fast, slow = run(llm, rows, 12, True), run(llm, rows, 12, False)
    assert len(fast) == len(slow) == 12
    tol = 1e-5 if dtype == "float32" else 2e-2
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a.argmax(-1), b.argmax(-1))
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_one_greedy_tokens_are_the_forward_s(tiny_llm, bf16_llm, dtype):
    """Unpadded, transformers calls SDPA differently (enable_gqa): float noise, same tokens."""
    llm = tiny_llm if dtype == "float32" else bf16_llm
    for row in prompts(llm):
        fast, slow = run(llm, [row], 16, True), run(llm, [row], 16, False)
        assert [int(a.argmax()) for a in fast] == [int(b.argmax()) for b in slow]
        tol = 1e-5 if dtype == "float32" else 2e-2
        for a, b in zip(fast, slow, strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_packed_weights_in_bf16_only(tiny_llm, bf16_llm):
    assert decode_step(tiny_llm.model).head.packed is None
    packed = decode_step(bf16_llm.model).head.packed is not None
    assert packed == torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_step_is_built_once_per_model(tiny_llm):
    assert decode_step(tiny_llm.model) is decode_step(tiny_llm.model)
    assert isinstance(decode_step(tiny_llm.model, fast=False), ForwardStep)


def test_wrapped_linears_fall_back_to_the_forward(tiny_llm_dir):
    llm = FrozenLLM.load(tiny_llm_dir, RuntimeConfig(device="cpu", dtype="float32"))
    add_lora(llm.model.model.layers[0], rank=2, alpha=4.0)
    assert not llama_supported(llm.model)
    assert isinstance(decode_step(llm.model), ForwardStep)
    rows = prompts(llm)[:1]
    assert len(run(llm, rows, 3, True)) == 3


def test_static_kv_grows_extends_and_selects():
    """Every row's cache from column 0; a step writes each row's own next column and attends
    over a width that is a multiple of ALIGN; rows join and leave without moving columns."""
    from extok_rag.models.static_kv import ALIGN

    torch.manual_seed(0)
    k1, v1 = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)  # one row, 3 columns
    a = StaticKV.from_rows([[(k1, v1)]], 0)
    assert a.capacity == ALIGN and a.lengths.tolist() == [3]
    a.open_column()
    keys, _ = a.write(0, torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert keys.shape == (1, 2, ALIGN, 4) and a.attention_mask()[0, 0, 0, :5].tolist() == [
        True,
        True,
        True,
        True,
        False,
    ]
    a.close_column()
    assert a.lengths.tolist() == [4] and torch.equal(a.keys[0, 0, :, :3], k1[0])
    assert bool(a.keys[0, 0, :, 3].eq(1).all())
    k2, v2 = torch.randn(2, 2, 2, 4), torch.randn(2, 2, 2, 4)  # two rows: 2 columns, then 1
    b = StaticKV.from_rows([[(k2[:1], v2[:1])], [(k2[1:, :, 1:], v2[1:, :, 1:])]], 0)
    assert b.lengths.tolist() == [2, 1] and torch.equal(b.keys[0, 1, :, 0], k2[1, :, 1])
    both = a.extend(b)
    assert both.batch_size == 3 and both.lengths.tolist() == [4, 2, 1]
    assert both.used_mask().tolist() == [[1] * 4, [1, 1, 0, 0], [1, 0, 0, 0]]
    last = both.select([2])
    assert last.lengths.tolist() == [1] and torch.equal(last.keys[0, 0, :, 0], k2[1, :, 1])
    full = StaticKV.from_rows([[(k1, v1)]], 0)
    full.lengths = torch.tensor([ALIGN - 1])  # the step's width passes the buffer: it grows
    full.open_column()
    assert full.width == ALIGN and full.capacity == ALIGN
    full.close_column()
    full.open_column()
    assert full.width == 2 * ALIGN and full.capacity == 2 * ALIGN
    assert torch.equal(full.keys[0, 0, :, :3], k1[0])


def test_decode_batch_fast_and_forward_steps_agree(bf16_llm):
    """The serve batch on the fast step: the same tokens as on the model's forward."""
    from extok_rag.config import GenerationConfig
    from extok_rag.models.batch_decode import DecodeBatch

    rows = prompts(bf16_llm)
    got = {}
    for fast in (True, False):
        batch, out = DecodeBatch(bf16_llm, fast=fast), {}
        cfgs = [GenerationConfig(max_new_tokens=n, repeat_stop=0) for n in (9, 5, 12)]
        joins = {0: 0, 2: 1, 3: 2}  # step -> the row joining then
        for s in range(20):
            i = joins.get(s)
            emitted = batch.step() + ([] if i is None else batch.admit([(i, rows[i], cfgs[i])]))
            for e in emitted:
                out.setdefault(e.key, []).append(e.token)
        got[fast] = out
    assert got[True] == got[False] and len(got[True]) == 3


def test_static_kv_runs_group_rows_of_one_width():
    """Each row attends over its own width (its length + 1 rounded up to ALIGN); consecutive
    rows of one width are one run."""
    from extok_rag.models.static_kv import ALIGN

    def runs(lengths):
        kv = StaticKV.empty(torch.zeros(1, 1, 1, 2), 1, torch.tensor(lengths), 4 * ALIGN)
        kv.open_column()
        return kv.runs

    assert runs([3, 2 * ALIGN - 1, ALIGN - 5, 2 * ALIGN + 1]) == [
        (0, 1, ALIGN),
        (1, 2, 2 * ALIGN),
        (2, 3, ALIGN),
        (3, 4, 3 * ALIGN),
    ]
    assert runs([3, ALIGN - 5, ALIGN, 2 * ALIGN - 1]) == [(0, 2, ALIGN), (2, 4, 2 * ALIGN)]


@pytest.mark.parametrize("seed", [483, 527, 1110])
def test_attention_gives_a_head_the_same_bits_on_every_thread(seed):
    """SmolLM2's shapes (9 query heads on 3 key heads of 64): four copies of one row in a batch
    land on both threads; each copy gets the same bits. The seeds are cases where torch's CPU
    flash kernel, given groups of 3 queries unpadded, computed them otherwise on the second
    thread (its scratch buffer misaligned; found on an AMD EPYC with AVX512-BF16)."""
    from types import SimpleNamespace

    from extok_rag.models.static_kv import aligned

    g = torch.Generator().manual_seed(seed)
    n = 450 + seed % 700  # the row's length
    q = (torch.randn(1, 3, 3, 64, generator=g) * 3).bfloat16().reshape(1, 9, 1, 64)
    k = (torch.randn(1, 3, 2048, 64, generator=g) * 2).bfloat16()
    v = torch.randn(1, 3, 2048, 64, generator=g).bfloat16()
    width = aligned(n + 1)
    bias = torch.zeros(4, 1, 1, width, dtype=torch.bfloat16)
    bias[..., n + 1 :] = float("-inf")
    step = SimpleNamespace(heads=9, kv_heads=3, head_dim=64, scaling=0.125)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = LlamaStep._attend(
            step, q.repeat(4, 1, 1, 1), k.repeat(4, 1, 1, 1), v.repeat(4, 1, 1, 1), [(0, 4, bias)]
        )  # (4, 1, 9 * 64)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(out[i], out[0]) for i in range(1, 4))

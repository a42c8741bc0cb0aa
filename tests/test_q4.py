"""The 4-bit decoding weights (`models.q4`): Q4_1 blocks read as ggml/gguf-py define them, the
row order transformers gives q and k, the int4 kernel's product, the cache beside the model,
and the decoding step on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_llama

from extok_rag.models import q4
from extok_rag.models.decode_step import LlamaStep
from extok_rag.models.static_kv import StaticKV

gguf = pytest.importorskip("gguf")
needs_kernel = pytest.mark.skipif(
    not q4.kernel_available(), reason="torch's int4 CPU kernel or oneDNN bf16 is missing here"
)


def _quantize(w: torch.Tensor) -> q4.Q4Weight:
    """A float (N, K) weight as Q4_1 blocks (min and scale per 32, as llama.cpp quantises)."""
    blocks = w.float().reshape(w.shape[0], -1, q4.GROUP)  # (N, K / 32, 32)
    lo, hi = blocks.amin(-1), blocks.amax(-1)
    d = ((hi - lo) / 15).clamp_min(1e-4).half()
    m = lo.half()
    q = ((blocks - m.float()[..., None]) / d.float()[..., None]).round().clamp(0, 15)
    return q4.Q4Weight(q.to(torch.uint8).reshape(w.shape), d, m)


def _to_bytes(w: q4.Q4Weight) -> np.ndarray:
    """The GGUF bytes (N, K / 32 * 20) of blocks: d, m, then element i | element 16 + i << 4."""
    n = w.q.shape[0]
    q = w.q.reshape(n, -1, q4.GROUP).numpy()
    nibbles = (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8)  # (N, K / 32, 16)
    d = w.d.numpy().view(np.uint8).reshape(n, -1, 2)
    m = w.m.numpy().view(np.uint8).reshape(n, -1, 2)
    return np.concatenate((d, m, nibbles), axis=-1).reshape(n, -1)


def _permute(t: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's row order for q and k (convert_hf_to_gguf), the inverse of `_unpermute`."""
    n = t.shape[0]
    return t.reshape(heads, 2, n // heads // 2, -1).transpose(1, 2).reshape(n, -1)


def _gguf_of(model, path) -> None:
    """Quantise every layer linear of a tiny Llama to Q4_1, set the model to exactly those
    values, and write them as a GGUF in llama.cpp's layout."""
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    kinds = {v: k for k, v in q4._HF_NAMES.items()}
    for name, param in model.named_parameters():
        parts = name.split(".")
        sub = ".".join(parts[3:5])
        if parts[1] != "layers" or sub not in kinds:
            continue
        blocks = _quantize(param.data)
        param.data.copy_(blocks.dequantize().to(param.dtype))
        if kinds[sub] in ("attn_q", "attn_k"):
            heads = cfg.num_attention_heads if kinds[sub] == "attn_q" else cfg.num_key_value_heads
            blocks = q4.Q4Weight(*(_permute(t, heads) for t in (blocks.q, blocks.d, blocks.m)))
        writer.add_tensor(
            f"blk.{parts[2]}.{kinds[sub]}.weight",
            _to_bytes(blocks),
            raw_dtype=gguf.GGMLQuantizationType.Q4_1,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_blocks_dequantise_as_gguf_py():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(6, 3 * 20), dtype=np.uint8)
    scales = rng.normal(size=(6, 3, 2)).astype(np.float16).view(np.uint8).reshape(6, 3, 4)
    raw.reshape(6, 3, 20)[..., :4] = scales  # finite d and m
    ours = q4._blocks(raw, 6).dequantize().numpy()
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1)
    assert np.array_equal(ours, theirs.reshape(6, -1))


def test_rows_come_back_in_transformers_order():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = _quantize(torch.randn(64, 64))
    gguf_rows = q4.Q4Weight(*(_permute(t, 4) for t in (w.q, w.d, w.m)))
    theirs = LlamaTensorProcessor()._reverse_permute_weights(gguf_rows.dequantize().numpy(), 4, 4)
    assert np.array_equal(q4._unpermute(gguf_rows, 4).dequantize().numpy(), theirs)


@needs_kernel
@pytest.mark.parametrize("rows", [(64, 48), (32, 48)])  # fused into one matmul, or not
def test_projection_is_the_dequantised_matmul(rows):
    a, b = (_quantize(torch.randn(n, 64)) for n in rows)
    x = torch.randn(3, 1, 64).bfloat16()
    both = q4.Q4Projection(q4.Q4Packed.from_blocks(a), q4.Q4Packed.from_blocks(b))
    assert len(both.weights) == (1 if rows[0] % 64 == 0 else 2)
    out = both(x)  # (3, 1, sum(rows))
    assert out.shape == (3, 1, sum(rows)) and out.dtype == torch.bfloat16
    ref = x.float() @ torch.cat((a.dequantize(), b.dequantize())).T
    assert (out.float() - ref).norm() / ref.norm() < 1e-2  # scales and zeros rounded to bf16
    alone = q4.Q4Projection(q4.Q4Packed.from_blocks(b))(x)
    assert torch.equal(out[..., rows[0] :], alone)


@needs_kernel
def test_cache_is_built_checked_and_reused(tmp_path):
    model = tiny_llama().to(torch.bfloat16)
    _gguf_of(model, tmp_path / "tiny.gguf")
    built = q4.cached(tmp_path / "tiny.gguf", tmp_path, model, "fp-1")
    assert built is not None and len(built) == 7 * model.config.num_hidden_layers
    assert (tmp_path / q4.CACHE_FILE).is_file()
    again = q4.cached(tmp_path / "tiny.gguf", tmp_path, model, "fp-1")
    name = "model.layers.1.self_attn.k_proj.weight"
    assert torch.equal(again[name].packed, built[name].packed)
    assert torch.equal(again[name].scales_zeros, built[name].scales_zeros)
    # another model (another fingerprint, one weight changed): the GGUF is not its weights
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1
    assert q4.cached(tmp_path / "tiny.gguf", tmp_path, model, "fp-2") is None
    assert q4.cached(tmp_path / "tiny.gguf", tmp_path, model.float(), "fp-1") is None  # fp32


@needs_kernel
def test_step_on_4bit_weights_matches_the_bf16_step(tmp_path):
    model = tiny_llama(initializer_range=0.2).to(torch.bfloat16)
    _gguf_of(model, tmp_path / "tiny.gguf")
    weights = q4.cached(tmp_path / "tiny.gguf", tmp_path, model, "fp")
    cfg = model.config
    B, T, D = 2, 12, cfg.hidden_size // cfg.num_attention_heads
    layers = [
        (torch.randn(B, cfg.num_key_value_heads, T, D).bfloat16(),) * 2
        for _ in range(cfg.num_hidden_layers)
    ]
    tokens, positions = torch.tensor([5, 9]), torch.tensor([T, T])
    rows = [[(k[b : b + 1], v[b : b + 1]) for k, v in layers] for b in range(B)]
    with torch.inference_mode():
        bf16 = LlamaStep(model)(StaticKV.from_rows(rows, 4), tokens, positions)
        four = LlamaStep(model, weights)(StaticKV.from_rows(rows, 4), tokens, positions)
    assert four.shape == bf16.shape == (B, cfg.vocab_size)
    rel = (four.float() - bf16.float()).norm() / bf16.float().norm()
    assert rel < 5e-2  # 4 layers of bf16-rounded scales, as the real model's ~0.3% per matmul
    assert torch.equal(four.argmax(-1), bf16.argmax(-1))


def test_models_not_from_a_gguf_decode_on_their_own_weights(tiny_llm_dir):
    from extok_rag.config import RuntimeConfig
    from extok_rag.models.llm import FrozenLLM

    llm = FrozenLLM.load(tiny_llm_dir, RuntimeConfig(device="cpu", dtype="bfloat16"))
    assert llm.gguf is None and llm.q4_weights() is None

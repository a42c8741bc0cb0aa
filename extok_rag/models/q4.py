"""The default LLM's own 4-bit weights, for decoding: the Q4_1 blocks of the GGUF it ships, read
straight from the file and multiplied by torch's int4 weight-only CPU kernel.

Why. A batch-1 decoding step reads every weight once, so its time is bytes over memory
bandwidth. The layers' weights are 212 MB in bf16 and 60 MB as the GGUF stores them (4 bits per
weight, plus a float16 scale and minimum per 32). The frozen LLM *is* this GGUF dequantised
(`defaults.convert_gguf`), so the kernel reads the very values the model holds, four times
fewer bytes.

Q4_1 (ggml): a block of 32 consecutive weights of a row holds `d` and `m` (float16) and 32
4-bit `q`; a weight is `d * q + m`. In the block's 16 bytes, byte i holds element i in its low
nibble and element 16 + i in its high one. transformers' loader reverses llama.cpp's row
permutation of q and k (`reverse_permute`); the same row permutation applies to the blocks.

torch's kernel (`_weight_int4pack_mm_for_cpu`, as in gpt-fast) computes a weight as
`(q - 8) * scale + zero` in float32 from bf16 `scale` and `zero`: here `d` and `m + 8 d`,
rounded to bf16. So its weights equal the model's up to bf16 rounding (the model's weights are
`d * q + m` rounded to bf16), and a step's logits differ from the bf16 step's by float noise;
greedy answers are measured against it (docs/benchmarks.md, `decode-speed`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from extok_rag.models import native

GROUP = 32  # weights per Q4_1 block
_BLOCK_BYTES = 2 + 2 + GROUP // 2  # d, m (float16), 32 nibbles
_Q4_1 = 3  # ggml's type id of Q4_1
_HF_NAMES = {  # GGUF tensor -> transformers Llama parameter (of layer i)
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


@dataclass(frozen=True)
class Q4Weight:
    """One (N, K) weight in Q4_1 blocks along K."""

    q: torch.Tensor  # (N, K) uint8, each in [0, 16)
    d: torch.Tensor  # (N, K / 32) float16, the blocks' scales
    m: torch.Tensor  # (N, K / 32) float16, the blocks' minimums

    def dequantize(self) -> torch.Tensor:
        """(N, K) float32, as gguf-py computes it for transformers: `d * q`, then `+ m`."""
        d = self.d.float().repeat_interleave(GROUP, dim=1)
        m = self.m.float().repeat_interleave(GROUP, dim=1)
        return (d * self.q.float()) + m


def _blocks(raw: np.ndarray, rows: int) -> Q4Weight:
    """A GGUF Q4_1 tensor's bytes (rows, K / 32 * 20) -> its blocks."""
    b = raw.reshape(rows, -1, _BLOCK_BYTES)  # (N, K / 32, 20)
    d = torch.from_numpy(b[..., 0:2].copy().view(np.float16)[..., 0])  # (N, K / 32)
    m = torch.from_numpy(b[..., 2:4].copy().view(np.float16)[..., 0])
    packed = torch.from_numpy(b[..., 4:].copy())  # (N, K / 32, 16)
    q = torch.cat((packed & 0x0F, packed >> 4), dim=-1)  # (N, K / 32, 32): low nibbles first
    return Q4Weight(q.reshape(rows, -1), d, m)


def _unpermute(w: Q4Weight, heads: int) -> Q4Weight:
    """transformers' `reverse_permute_weights` on the rows (of q, d and m alike)."""

    def rows(t: torch.Tensor) -> torch.Tensor:
        n = t.shape[0]
        return t.reshape(heads, n // heads // 2, 2, -1).transpose(1, 2).reshape(n, -1)

    return Q4Weight(rows(w.q), rows(w.d), rows(w.m))


def read_gguf_q4(path: Path, heads: int, kv_heads: int) -> dict[str, Q4Weight]:
    """Every Q4_1 layer weight of a Llama GGUF, under its transformers parameter name
    (`model.layers.{i}.self_attn.q_proj.weight`, …). Other tensors (norms, the Q8_0
    embedding) are left out."""
    from gguf import GGUFReader

    out: dict[str, Q4Weight] = {}
    for t in GGUFReader(path).tensors:
        parts = t.name.split(".")  # blk.{i}.{kind}.weight
        if parts[0] != "blk" or parts[2] not in _HF_NAMES or int(t.tensor_type) != _Q4_1:
            continue
        w = _blocks(np.asarray(t.data), int(t.shape[1]))
        if parts[2] in ("attn_q", "attn_k"):
            w = _unpermute(w, heads if parts[2] == "attn_q" else kv_heads)
        out[f"model.layers.{parts[1]}.{_HF_NAMES[parts[2]]}.weight"] = w
    return out


def kernel_available() -> bool:
    """torch's int4 CPU kernel (torch >= 2.6), for bf16 activations on a CPU with oneDNN bf16."""
    return (
        hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


@dataclass(frozen=True)
class Q4Packed:
    """One weight as torch's int4 kernel reads it."""

    packed: torch.Tensor  # (N, K / 2) uint8, the kernel's layout
    scales_zeros: torch.Tensor  # (K / 32, N, 2) bf16: scale d, zero m + 8 d

    @classmethod
    def from_blocks(cls, w: Q4Weight) -> Q4Packed:
        d, m = w.d.float(), w.m.float()  # (N, K / 32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w.q.to(torch.int32), 1)
        # the kernel's (q - 8) * scale + zero == d * q + m for scale d, zero m + 8 d
        scales_zeros = torch.stack((d, m + 8 * d), dim=-1).transpose(0, 1).bfloat16()
        return cls(packed, scales_zeros.contiguous())


_PACK_ROWS = 64  # the kernel packs rows in blocks of 64: whole blocks concatenate


class Q4Projection:
    """Linear maps of one input from their 4-bit weights: x (..., K) bf16 -> (..., sum N_i)
    bf16, the maps' outputs side by side in the order given (the contract of
    `decode_step.Projection`). One int4 matmul when the packed weights concatenate (every
    map but the last a whole number of the kernel's row blocks: all of SmolLM2's), else one
    per map."""

    def __init__(self, *weights: Q4Packed):
        if all(w.packed.shape[0] % _PACK_ROWS == 0 for w in weights[:-1]):
            weights = (
                Q4Packed(
                    torch.cat([w.packed for w in weights]),  # (N, K / 2)
                    torch.cat([w.scales_zeros for w in weights], dim=1).contiguous(),
                ),
            )
        self.weights = weights

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (M, K)
        outs = [
            torch.ops.aten._weight_int4pack_mm_for_cpu(flat, w.packed, GROUP, w.scales_zeros)
            for w in self.weights
        ]  # each (M, N_i)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def native(self) -> tuple[int, list[torch.Tensor]]:
        """As `native_step.cpp`'s `Proj` takes it: kind, each map's packed and scales."""
        return native.PROJ_INT4, [t for w in self.weights for t in (w.packed, w.scales_zeros)]


def matches(blocks: Q4Weight, weight: torch.Tensor) -> bool:
    """Whether a model parameter is exactly these blocks dequantised, in its own dtype: the
    proof that the model was loaded from this GGUF and not changed since."""
    return blocks.q.shape == weight.shape and torch.equal(
        blocks.dequantize().to(weight.dtype), weight.detach()
    )


CACHE_FILE = "q4_1-decode.safetensors"


def usable(model: torch.nn.Module) -> bool:
    """Whether a decoding step could read this model's weights in 4 bits: a bf16 model on a
    CPU whose oneDNN computes bf16 (an fp32 model keeps MKL's fp32 matmuls: the int4 kernel
    on fp32 activations measured 25x slower than bf16's)."""
    p = next(model.parameters())
    return p.device.type == "cpu" and p.dtype == torch.bfloat16 and kernel_available()


def build(gguf: Path, model: torch.nn.Module) -> dict[str, Q4Packed] | None:
    """The GGUF's Q4_1 layer weights, packed, if every one equals the model's parameter of that
    name (in the model's dtype); None if any differs (another model, or changed weights)."""
    cfg = model.config
    blocks = read_gguf_q4(gguf, cfg.num_attention_heads, cfg.num_key_value_heads)
    params = dict(model.named_parameters())
    if not blocks or any(n not in params or not matches(b, params[n]) for n, b in blocks.items()):
        return None
    return {name: Q4Packed.from_blocks(b) for name, b in blocks.items()}


def cached(gguf: Path, cache_dir: Path, model: torch.nn.Module, fingerprint: str):
    """`build`'s weights, kept in `cache_dir` (beside the dequantised model) for later loads:
    reading, checking and packing take ~10 s, loading the file well under one. The file holds
    the model fingerprint and torch version it was made for; another one is rebuilt. Returns
    None where the 4-bit path does not apply (`usable`, `build`)."""
    from safetensors.torch import load_file, save_file

    if not usable(model):
        return None
    path = cache_dir / CACHE_FILE
    meta = {"fingerprint": fingerprint, "torch": torch.__version__, "gguf": gguf.name}
    if path.is_file():
        try:
            from safetensors import safe_open

            with safe_open(path, "pt") as f:
                ok = f.metadata() == meta
            if ok:
                flat = load_file(path)
                names = {key.rsplit(":", 1)[0] for key in flat}
                return {n: Q4Packed(flat[f"{n}:packed"], flat[f"{n}:scales_zeros"]) for n in names}
        except (OSError, ValueError, KeyError, RuntimeError):
            pass  # unreadable or partial: rebuilt below
    weights = build(gguf, model)
    if weights is None:
        return None
    flat = {f"{n}:{part}": getattr(w, part) for n, w in weights.items() for part in _PARTS}
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        save_file(flat, tmp, metadata=meta)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only cache: the weights still serve this process
    return weights


_PARTS = ("packed", "scales_zeros")

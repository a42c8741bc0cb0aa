"""One decoding step over a `StaticKV` cache: every row's last token at its own next position ->
last-position logits (B, V). Two implementations of the same step:

- `LlamaStep`, the fast one, for Llama-architecture models (SmolLM2, the tiny test models): the
  layers written out over the model's own weights, with the q|k|v and gate|up matmuls fused and,
  in bf16 on a CPU, every weight packed once into oneDNN's blocked layout.
- `ForwardStep`, the Hugging Face forward over a `DynamicCache` view of the buffer: any model.

`LlamaStep` reads the layers' weights in 4 bits where the LLM has them (`models.q4`: the GGUF
it was dequantised from; 13.7 against 21.7 ms at batch 1 here), else its bf16 weights. It runs
its layers in C++ once `models.native` is loaded (`native_step.cpp`: the same ops and
roundings, the same logits bit for bit, without ~6 ms of Python per step at batch 1), else in
the Python loop below.

Why `LlamaStep` is fast. A batch-1 step must read every weight once (270 MB in bf16 for
SmolLM2-135M); at this machine's copy bandwidth that takes ~6 ms, yet the HF forward took ~40.
A bf16 `F.linear` re-lays-out its weight on every call and so reaches ~15 GB/s where a weight
packed once reaches ~50 (the vocabulary head: 4.0 ms -> 1.1 ms); the rest was per-layer Python
(mask building, cache concatenation, hooks, keyword plumbing).

Why a row's tokens do not depend on its batch: each op is the one `modeling_llama` runs, on
the same values (RMSNorm in float32 as `LlamaRMSNorm`; rotary cos/sin read from a table the
model's own rotary module computed; SDPA called as transformers calls it for one query and a
mask, GQA-packed queries), and each gives a row the same bits at any batch size: a fused
matmul's output column is the same dot product as the separate matmul's, oneDNN's packed bf16
matmul and torch's int4 kernel compute each row apart, and the attention reads every row's
cache from column 0 over its own width, a multiple of 64, always with a mask (`StaticKV`), with
the query groups padded so that every thread computes a head alike (`_attend`). So on bf16 a
row's logits are the same bits alone or in any batch (tests; on SmolLM2, eval qa's raw row
alone and in batches of 16: 600/600 answers the same, docs/benchmarks.md, `q4-answers`).
In float32 `F.linear` (MKL) rounds a batch of one otherwise (~1e-7): float noise. The model's
forward (`ForwardStep`) gives the same greedy tokens, its logits up to float noise.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from extok_rag.models import native
from extok_rag.models.hf_cache import cache_kwargs, returned_cache
from extok_rag.models.q4 import Q4Packed, Q4Projection
from extok_rag.models.static_kv import StaticKV

_GROUP_ROWS = 4  # queries per key head as SDPA sees them, padded (`LlamaStep._attend`)


def _packable(weight: torch.Tensor) -> bool:
    """bf16 on a CPU with oneDNN: the packed path. Elsewhere `F.linear` is already the
    library's best (fp32 uses MKL; CUDA cuBLAS)."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


class Projection:
    """Linear maps of one input computed as one matmul: x (..., d_in) -> (..., sum d_out), the
    maps' outputs side by side in the order given. No bias (Llama has none)."""

    def __init__(self, *weights: torch.Tensor):
        self.weights = weights  # each (d_out_i, d_in), the model's own tensors
        self.packed = None
        if _packable(weights[0]):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(torch.cat(weights), 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        outs = [F.linear(x, w) for w in self.weights]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def native(self) -> tuple[int, list[torch.Tensor]]:
        """As `native_step.cpp`'s `Proj` takes it: kind, tensors."""
        if self.packed is not None:
            return native.PROJ_ONEDNN, [self.packed]
        return native.PROJ_LINEAR, list(self.weights)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`LlamaRMSNorm.forward`, op for op (so the same bits)."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as `apply_rotary_pos_emb` (x (B, H, 1, D); cos, sin (B, 1, 1, D))."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos) + (rotated * sin)


class _Layer:
    """One decoder layer's weights, as the step reads them: the model's own (bf16 packed), or
    `q4`'s 4-bit blocks of the same values keyed by parameter name (`models.q4`)."""

    def __init__(self, layer: nn.Module, prefix: str, q4: Mapping[str, Q4Packed] | None = None):
        self.norm_in = layer.input_layernorm.weight  # (d,)
        self.norm_post = layer.post_attention_layernorm.weight  # (d,)

        def projection(*names: str) -> Projection | Q4Projection:
            if q4:
                return Q4Projection(*(q4[f"{prefix}{n}.weight"] for n in names))
            return Projection(*(layer.get_submodule(n).weight for n in names))

        self.qkv = projection("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
        self.out = projection("self_attn.o_proj")
        self.gate_up = projection("mlp.gate_proj", "mlp.up_proj")
        self.down = projection("mlp.down_proj")


def llama_supported(model: nn.Module) -> bool:
    """Whether `LlamaStep` computes exactly this model's forward: a Llama decoder with plain
    bias-free linears (no LoRA or other wrapper), SiLU MLP, default RoPE, SDPA attention."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama":
        return False
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default" or cfg.hidden_act != "silu":
        return False
    if getattr(cfg, "_attn_implementation", "sdpa") != "sdpa":
        return False
    for layer in model.model.layers:
        linears = [getattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        linears += [getattr(layer.mlp, n) for n in ("gate_proj", "up_proj", "down_proj")]
        if any(type(m) is not nn.Linear or m.bias is not None for m in linears):
            return False
    head = model.get_output_embeddings()
    return type(head) is nn.Linear and head.bias is None


class LlamaStep:
    """The decoder written out over a Llama model's weights (see the module docstring). Holds
    packed copies of the weights in bf16 on a CPU (+ the model's size in memory), or with `q4`
    the layers' 4-bit weights (+ a quarter of theirs; the vocabulary head stays bf16)."""

    def __init__(
        self, model: nn.Module, q4: Mapping[str, Q4Packed] | None = None, native: bool = True
    ):
        cfg, decoder = model.config, model.model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = decoder.layers[0].self_attn.head_dim
        self.scaling = decoder.layers[0].self_attn.scaling
        self.eps = float(cfg.rms_norm_eps)
        self.embed = decoder.embed_tokens.weight  # (V, d)
        layers = decoder.layers[: cfg.num_hidden_layers]
        self.layers = [_Layer(layer, f"model.layers.{i}.", q4) for i, layer in enumerate(layers)]
        self.q4 = bool(q4)
        self.norm = decoder.norm.weight
        self.head = Projection(model.get_output_embeddings().weight)
        positions = torch.arange(cfg.max_position_embeddings, device=self.embed.device)
        with torch.no_grad():
            cos, sin = decoder.rotary_emb(self.embed[:1], positions[None])  # (1, P, D)
        self.cos, self.sin = cos[0], sin[0]  # (P, D), the values every forward computes
        # the C++ step over these weights (`models.native`), made at the first step after the
        # module is loaded; False where it does not apply
        self._native = None if native and self._native_applies() else False

    def _native_applies(self) -> bool:
        """The C++ step computes bf16 or float32 on a CPU, every weight in one dtype (as
        `_rms_norm` then keeps it: a float32 norm weight would promote a bf16 stream)."""
        norms = [self.norm, *(w for layer in self.layers for w in (layer.norm_in, layer.norm_post))]
        return (
            self.embed.device.type == "cpu"
            and self.embed.dtype in (torch.bfloat16, torch.float32)
            and all(w.dtype == self.embed.dtype for w in norms)
        )

    def native_step(self):
        """The C++ step if `models.native` is loaded in this process (else None)."""
        if self._native is None and (module := native.loaded()) is not None:
            step = module.Step(
                self.heads, self.kv_heads, self.head_dim, _GROUP_ROWS, self.scaling, self.eps
            )
            for layer in self.layers:
                maps = (layer.qkv, layer.out, layer.gate_up, layer.down)
                kinds, tensors = zip(*(m.native() for m in maps), strict=True)
                step.add_layer(layer.norm_in, layer.norm_post, list(kinds), list(tensors))
            step.set_head(self.norm, *self.head.native())
            self._native = step
        return self._native or None

    def __call__(self, kv: StaticKV, tokens: torch.Tensor, positions: torch.Tensor):
        """tokens, positions (B,) -> logits (B, V); writes one column of `kv`."""
        B, H, Hkv, D = tokens.shape[0], self.heads, self.kv_heads, self.head_dim
        x = F.embedding(tokens[:, None], self.embed)  # (B, 1, d)
        cos = self.cos[positions][:, None, None]  # (B, 1, 1, D)
        sin = self.sin[positions][:, None, None]
        kv.open_column()
        mask = kv.attention_mask()  # (B, 1, 1, width) bool
        # as SDPA turns a bool mask into a float one (0 / -inf in the query's dtype), once
        # per step instead of once per layer: the same values, one op instead of 30
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=mask.device)
        bias.masked_fill_(~mask, float("-inf"))
        # each run of rows of one own width attends over that width (`StaticKV.runs`)
        runs = [(a, b, bias[a:b, ..., :w]) for a, b, w in kv.runs]
        if (fast := self.native_step()) is not None:  # the same computation in C++
            firsts, stops, masks = (list(t) for t in zip(*runs, strict=True))
            cos_sin = self.cos[positions], self.sin[positions]  # (B, D) each
            logits = fast(x, *cos_sin, firsts, stops, masks, kv.keys, kv.values, kv.lengths)
            kv.close_column()  # logits (B, V)
            return logits
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(_rms_norm(x, layer.norm_in, self.eps))  # (B, 1, (H + 2 Hkv) D)
            qk = qkv[..., : (H + Hkv) * D].view(B, 1, H + Hkv, D).transpose(1, 2)
            qk = _rotate(qk, cos, sin)  # (B, H + Hkv, 1, D): q and k rotated in one go
            v = qkv[..., (H + Hkv) * D :].view(B, 1, Hkv, D).transpose(1, 2)  # (B, Hkv, 1, D)
            keys, values = kv.write(i, qk[:, H:], v)  # (B, Hkv, width, D)
            x = x + layer.out(self._attend(qk[:, :H], keys, values, runs))
            gate, up = layer.gate_up(_rms_norm(x, layer.norm_post, self.eps)).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)  # (B, 1, d)
        kv.close_column()
        return self.head(_rms_norm(x, self.norm, self.eps))[:, -1]  # (B, V)

    def _attend(self, q, keys, values, runs) -> torch.Tensor:
        """q (B, H, 1, D) over keys, values (B, Hkv, width, D) -> (B, 1, H D), one SDPA call
        per run of `StaticKV.runs` (`runs`: first row, stop, its additive mask (rows, 1, 1, w)),
        each over its own width w. The queries are packed (B, Hkv, H / Hkv, D), one key head
        serving its group, and a mask is always given: transformers' own call for one query
        with a mask, 5x faster on a CPU than its unmasked batch-1 call (`enable_gqa`, 280 vs
        57 us per layer here), and the same kernel path for a row alone as in a batch.

        Each group is padded with zero queries to a multiple of `_GROUP_ROWS` (SmolLM2: 3 -> 4;
        their outputs are dropped). Why: torch's CPU flash kernel gives each thread a scratch
        buffer of `group x (kv block + head_dim + 2)` floats cut from one allocation, so with a
        group of 3 the second thread's buffer is only 8-byte aligned, and its bf16 matmuls then
        sum in another order than the first thread's (1 ulp, in ~1 of 600 calls on random
        data; found tracing HotpotQA answers that changed with the batch they shared).
        Which thread computes a (row, head) depends on the batch size, so a row's attention
        depended on its batch. With 4 rows per group every thread's buffer is 32-byte
        aligned: no thread-dependent result in 7,000 random calls, against 7 in 4,000
        unpadded; and 10-20% faster than 3 rows."""
        B, H, D = q.shape[0], self.heads, self.head_dim
        group = H // self.kv_heads
        packed = q.reshape(B, self.kv_heads, group, D)
        if group % _GROUP_ROWS:
            packed = F.pad(packed, (0, 0, 0, _GROUP_ROWS - group % _GROUP_ROWS))
        outs = [
            F.scaled_dot_product_attention(
                packed[a:b],
                keys[a:b, :, : bias.shape[-1]],
                values[a:b, :, : bias.shape[-1]],
                attn_mask=bias,
                scale=self.scaling,
            )
            for a, b, bias in runs
        ]  # each (rows, Hkv, padded group, D)
        out = (outs[0] if len(outs) == 1 else torch.cat(outs))[:, :, :group]  # (B, Hkv, group, D)
        return out.reshape(B, H, 1, D).transpose(1, 2).reshape(B, 1, H * D)


class ForwardStep:
    """The Hugging Face forward of any causal LM over a `DynamicCache` view of the buffer: the
    rows' columns up to the longest, the new position after them for every row (the columns
    between a shorter row's end and it masked), then copied into each row's own next column."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, kv: StaticKV, tokens: torch.Tensor, positions: torch.Tensor):
        """tokens, positions (B,) -> logits (B, V); writes one column of `kv`."""
        cache = DynamicCache(ddp_cache_data=kv.layers())
        used = kv.used_mask()  # (B, n)
        mask = torch.cat([used, used.new_ones(used.shape[0], 1)], dim=1)  # (B, n + 1)
        kv.open_column()
        out = self.model(
            input_ids=tokens[:, None],  # (B, 1)
            attention_mask=mask.long(),  # (B, n + 1)
            position_ids=positions[:, None],  # (B, 1)
            **cache_kwargs(cache),
            use_cache=True,
            logits_to_keep=1,
        )
        for i, layer in enumerate(returned_cache(out).layers):
            kv.write(i, layer.keys[:, :, -1:], layer.values[:, :, -1:])
        kv.close_column()
        return out.logits[:, -1]  # (B, V)


_STEPS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[bool, bool], LlamaStep]] = (
    weakref.WeakKeyDictionary()
)


def decode_step(
    model: nn.Module,
    fast: bool = True,
    q4: Mapping[str, Q4Packed] | None = None,
    native_step: bool = True,
) -> LlamaStep | ForwardStep:
    """The step for `model`: `LlamaStep` when it supports the model and `fast` (on `q4`'s 4-bit
    weights when given, `FrozenLLM.q4_weights`; in C++ where `models.native` has a build and
    `native_step`, the same bits), else `ForwardStep`. A model's `LlamaStep` (its packed
    weights, built in ~0.1 s) is kept while the model lives: a frozen LLM's weights never
    change."""
    if not (fast and llama_supported(model)):
        return ForwardStep(model)
    if native_step:
        native.load()  # a cached build of the C++ step, if there is one (never a compile)
    steps = _STEPS.setdefault(model, {})
    key = (bool(q4), native_step)
    if key not in steps:
        steps[key] = LlamaStep(model, q4, native_step)
    return steps[key]

"""Down-scaling by pooled queries in the tokenizer's last layer (ARC-Encoder's pooling): at k = 1
the layer itself, at k > 1 one state per window written by attention over the chunk so far."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from extok_rag.config import AdapterConfig, TokenizerConfig
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.spans import Span, chunk_parts


def ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 259, (n,), generator=torch.Generator().manual_seed(seed))


def pooled(tiny_llm, num_layers=2, **kw) -> ExtensibleTokenizer:
    cfg = TokenizerConfig(num_layers=num_layers, downscale="query_pool", **kw)
    return ExtensibleTokenizer.from_llm(tiny_llm, cfg)


def reference(encoder, h: torch.Tensor, k: int, start: int = 0) -> torch.Tensor:
    """The held-back layer on windows, one window and one head at a time: (L, d) -> (n, d)."""
    layer = encoder.layers[-1]
    attn = layer.self_attn
    L, hd = h.shape[0], attn.head_dim
    cos, sin = encoder.rotary_emb(h[None], torch.arange(L)[None])
    xn = layer.input_layernorm(h)
    q = attn.q_proj(xn).view(L, -1, hd).transpose(0, 1)[None]
    key = attn.k_proj(xn).view(L, -1, hd).transpose(0, 1)[None]
    q, key = apply_rotary_pos_emb(q, key, cos, sin)
    value = attn.v_proj(xn).view(L, -1, hd).transpose(0, 1)
    q, key = q[0], key[0]
    group = q.shape[0] // key.shape[0]
    rows = []
    for lo in range(start, L, k):
        hi = min(lo + k, L)
        heads = []
        for head in range(q.shape[0]):
            kv = head // group
            logits = q[head, lo:hi].mean(0) @ key[kv, :hi].T * attn.scaling  # (hi,)
            heads.append(logits.softmax(-1) @ value[kv, :hi])  # (hd,)
        y = h[lo:hi].mean(0) + attn.o_proj(torch.cat(heads))
        rows.append(y + layer.mlp(layer.post_attention_layernorm(y)))
    return torch.stack(rows)


def test_the_encoder_stops_one_layer_short_and_k1_is_that_layer(tiny_llm):
    tok = pooled(tiny_llm, num_layers=2)
    x = ids(20)[None]
    hidden = tiny_llm.model(input_ids=x, output_hidden_states=True).hidden_states
    with torch.no_grad():
        torch.testing.assert_close(tok(x), hidden[1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tok.downscale(tok(x), 1), hidden[2], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tok.unadapted_states(x), hidden[2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("length", "k", "start"), [(16, 4, 0), (10, 4, 0), (19, 2, 5), (7, 8, 0)])
def test_each_window_is_one_pooled_query_over_the_chunk_so_far(tiny_llm, length, k, start):
    tok = pooled(tiny_llm, num_layers=2)
    with torch.no_grad():
        h = tok(ids(length)[None])[0]
        got = tok.downscale_from(h, start, k)
        assert got.shape == (-(-(length - start) // k), 64)
        torch.testing.assert_close(got, reference(tok.encoder, h, k, start), atol=1e-5, rtol=1e-5)


def test_a_window_sees_what_came_before_it_and_nothing_after(tiny_llm):
    tok = pooled(tiny_llm, num_layers=2)
    a, b = ids(16, 1), ids(16, 1).clone()
    b[12:] = ids(4, 2)  # the last window differs
    c = ids(16, 1).clone()
    c[:4] = ids(4, 3)  # the first window differs
    with torch.no_grad():
        out_a, out_b, out_c = (tok.downscale(tok(x[None])[0], 4) for x in (a, b, c))
    torch.testing.assert_close(out_a[:3], out_b[:3])
    assert not torch.allclose(out_a[3], out_b[3])
    assert not torch.allclose(out_a[1:], out_c[1:])  # later windows read the first


def test_a_run_from_inside_the_chunk_equals_the_whole_chunks_windows(tiny_llm):
    """What expand reads (`chunk_parts`: states up to the run's end, windows from its start)
    equals the whole chunk's windows there when k divides the start."""
    tok = pooled(tiny_llm, num_layers=2)
    with torch.no_grad():
        h = tok(ids(24)[None])[0]
        whole = tok.downscale(h, 4)
        torch.testing.assert_close(tok.downscale_from(h[:16], 8, 4), whole[2:4])
        spans = [Span(0, a, b, f"s{a}", 0.0) for a, b in [(0, 8), (8, 16), (16, 24)]]
        parts = chunk_parts(h, spans, {(0, 8)}, 4, 1, tok.downscale_from)
    assert parts[0] == "s0"
    torch.testing.assert_close(parts[1], whole[2:])


def test_batched_states_pool_as_each_row_does(tiny_llm):
    tok = pooled(tiny_llm, num_layers=1)
    with torch.no_grad():
        h = tok(torch.stack([ids(12, s) for s in range(3)]))  # (3, 12, d)
        got = tok.downscale(h, 4)
        for row in range(3):
            torch.testing.assert_close(got[row], tok.downscale(h[row], 4))


def test_it_saves_loads_and_needs_its_held_back_layer(tiny_llm, tmp_path):
    tok = pooled(tiny_llm, num_layers=2, lora_rank=2, adapter=AdapterConfig("rmsnorm_linear"))
    with torch.no_grad():
        for name, p in tok.named_parameters():
            if "layers.1." in name and "lora_b" in name:
                p.normal_(std=0.1)
    tok.save_pretrained(tmp_path, full=False)
    loaded = ExtensibleTokenizer.from_pretrained(tmp_path, tiny_llm)  # LoRA folded in
    x = ids(16)
    torch.testing.assert_close(loaded.compress(x, 4, 16)[0], tok.compress(x, 4, 16)[0])
    assert loaded.compress(x, 4, 16)[0].shape == (4, 64)
    with pytest.raises(ValueError, match="does not hold back"):
        ExtensibleTokenizer.from_llm(tiny_llm).downscale(torch.zeros(4, 64), 2, "query_pool")
    with pytest.raises(ValueError, match="at least one"):
        pooled(tiny_llm, num_layers=0)


def test_rows_of_many_lengths_and_ks_pool_in_padded_batches_as_one_by_one(tiny_llm, monkeypatch):
    from extok_rag.models import extensible_tokenizer

    monkeypatch.setattr(extensible_tokenizer, "batch_overhead", lambda device: 10_000)
    tok = pooled(tiny_llm, num_layers=2, adapter=AdapterConfig(kind="rmsnorm_linear"))
    lengths, ks = [16, 5, 23, 9, 16, 1, 12], [4, 4, 4, 2, 2, 1, 8]
    with torch.no_grad():
        states = [tok(ids(n, seed)[None])[0] for seed, n in enumerate(lengths)]
        one_by_one = [tok.downscale(s, k) for s, k in zip(states, ks, strict=True)]
        batched = tok.downscale_each(states, ks)  # one padded group per k
    for got, want in zip(batched, one_by_one, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_padded_batches_pass_gradients_to_the_held_back_layer_as_one_by_one(tiny_llm):
    tok = pooled(tiny_llm, num_layers=2)
    layer = tok.encoder.layers[-1]
    layer.requires_grad_(True)
    states = [tok(ids(n, n)[None])[0].detach() for n in (11, 4, 8)]
    grads = []
    for pool in (
        lambda: tok.downscale_each(states, [4, 4, 4]),
        lambda: [tok.downscale(s, 4) for s in states],
    ):
        layer.zero_grad()
        sum(y.square().sum() for y in pool()).backward()
        grads.append(layer.mlp.down_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)

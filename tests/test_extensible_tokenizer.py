"""The extensible tokenizer: a faithful copy of the LLM's first layers, chunk-local encoding,
bitwise save/load, and refusal of a different LLM."""

import json

import pytest
import torch

from extok_rag.config import AdapterConfig, RuntimeConfig, TokenizerConfig
from extok_rag.errors import CheckpointError, IncompatibleModelError
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM


def ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 259, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_layers", [0, 1, 3])
def test_states_are_the_llm_residual_stream_after_n_layers(tiny_llm, num_layers):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=num_layers))
    x = ids(20)[None]
    expected = tiny_llm.model(input_ids=x, output_hidden_states=True).hidden_states[num_layers]
    torch.testing.assert_close(tok(x), expected, atol=1e-5, rtol=1e-5)


def test_zero_layers_gives_the_token_embeddings_exactly(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=0))
    x = ids(12)
    assert torch.equal(tok.encode([x])[0], tiny_llm.embed_tokens(x))


def test_tokenizer_owns_its_weights(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=2))
    with torch.no_grad():
        for p in tok.parameters():
            p.add_(1.0)
    fresh = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=2))
    assert not torch.equal(tok.encoder.embed_tokens.weight, fresh.encoder.embed_tokens.weight)


def test_chunks_encode_on_their_own_batched_or_not(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=2))
    chunks = [ids(17, 1), ids(5, 2), ids(30, 3)]
    together = tok.encode(chunks)
    for chunk, states in zip(chunks, together, strict=True):
        torch.testing.assert_close(states, tok.encode([chunk])[0], atol=1e-5, rtol=1e-5)


def test_compress_splits_encodes_and_downscales(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=2))
    out = tok.compress(ids(70), k=4, chunk_len=32)
    assert [t.shape[0] for t in out] == [8, 8, 2]
    torch.testing.assert_close(out[2][-1], tok.encode([ids(70)[64:]])[0][-1].detach())


def test_adapter_starts_as_scaled_rmsnorm(tiny_llm):
    cfg = TokenizerConfig(num_layers=1, adapter=AdapterConfig("rmsnorm_linear", norm_scale=0.5))
    tok = ExtensibleTokenizer.from_llm(tiny_llm, cfg)
    plain = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))
    x = ids(9)[None]
    h = plain(x)
    expected = 0.5 * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + tok.adapter.norm.eps)
    torch.testing.assert_close(tok(x), expected, atol=1e-5, rtol=1e-5)


def perturbed(tiny_llm) -> ExtensibleTokenizer:
    cfg = TokenizerConfig(num_layers=2, adapter=AdapterConfig("rmsnorm_linear", standardize=True))
    tok = ExtensibleTokenizer.from_llm(tiny_llm, cfg)
    torch.manual_seed(3)
    with torch.no_grad():
        tok.adapter.proj.weight.add_(0.01 * torch.randn_like(tok.adapter.proj.weight))
        tok.adapter.mean.normal_()
        tok.encoder.layers[1].mlp.up_proj.weight.mul_(1.1)
    return tok


def test_save_load_is_a_bitwise_round_trip(tiny_llm, tmp_path):
    tok = perturbed(tiny_llm)
    tok.save_pretrained(tmp_path)
    loaded = ExtensibleTokenizer.from_pretrained(tmp_path, tiny_llm, merge=False)
    assert loaded.config == tok.config
    saved, back = tok.state_dict(), loaded.state_dict()
    assert saved.keys() == back.keys()
    for name in saved:
        assert torch.equal(saved[name], back[name]), name


def test_loading_merges_lora_into_the_weights_for_inference(tiny_llm, tmp_path):
    cfg = TokenizerConfig(num_layers=2, lora_rank=4, lora_alpha=8.0)
    tok = ExtensibleTokenizer.from_llm(tiny_llm, cfg)
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in tok.named_parameters():
            if "lora_b" in name:
                p.normal_(std=0.05)
    tok.save_pretrained(tmp_path, full=False)
    merged = ExtensibleTokenizer.from_pretrained(tmp_path, tiny_llm)
    kept = ExtensibleTokenizer.from_pretrained(tmp_path, tiny_llm, merge=False)
    assert not any(".lora_" in n for n in merged.state_dict())
    assert any(".lora_" in n for n in kept.state_dict())
    chunks = [ids(12), ids(7)]
    for a, b, c in zip(merged.encode(chunks), kept.encode(chunks), tok.encode(chunks), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b, c)
        assert not torch.equal(c, ExtensibleTokenizer.from_llm(tiny_llm, cfg).encode([ids(12)])[0])


def test_delta_checkpoint_stores_only_what_trains(tiny_llm, tmp_path):
    tok = perturbed(tiny_llm)
    tok.requires_grad_(False)
    tok.encoder.layers[1].mlp.up_proj.weight.requires_grad_(True)
    tok.save_pretrained(tmp_path, full=False)
    loaded = ExtensibleTokenizer.from_pretrained(tmp_path, tiny_llm, merge=False)
    for name, tensor in tok.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    meta = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert meta["full"] is False


def test_a_different_llm_is_refused(tiny_llm, other_llm_dir, tmp_path):
    ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=2)).save_pretrained(tmp_path)
    other = FrozenLLM.load(other_llm_dir, RuntimeConfig(device="cpu", dtype="float32"))
    assert other.identity.fingerprint != tiny_llm.identity.fingerprint
    with pytest.raises(IncompatibleModelError, match="trained for LLM"):
        ExtensibleTokenizer.from_pretrained(tmp_path, other)


def test_identity_does_not_depend_on_dtype(tiny_llm_dir, tiny_llm):
    bf16 = FrozenLLM.load(tiny_llm_dir, RuntimeConfig(device="cpu", dtype="bfloat16"))
    assert bf16.identity == tiny_llm.identity


def test_corrupt_checkpoints_give_clear_errors(tiny_llm, tmp_path):
    with pytest.raises(CheckpointError, match="not an extensible-tokenizer checkpoint"):
        ExtensibleTokenizer.from_pretrained(tmp_path, tiny_llm)
    ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=2)).save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ExtensibleTokenizer.from_pretrained(tmp_path, tiny_llm)


def test_a_merge_tokenizer_saves_its_merge_tree_and_pools_with_it(tiny_llm, tmp_path):
    cfg = TokenizerConfig(num_layers=1, lora_rank=2, downscale="merge")
    tok = ExtensibleTokenizer.from_llm(tiny_llm, cfg)
    torch.testing.assert_close(
        tok.compress(ids(16), 4, 8)[0], tok.compress(ids(16), 4, 8, "mean")[0]
    )
    with torch.no_grad():
        tok.merge.levels[1].proj.weight.normal_(std=0.1)
    tok.save_pretrained(tmp_path, full=False)
    assert any(n.startswith("merge.levels.1") for n in tok.delta_state_dict())
    loaded = ExtensibleTokenizer.from_pretrained(tmp_path, tiny_llm)
    x = ids(16)
    torch.testing.assert_close(loaded.compress(x, 4, 16)[0], tok.compress(x, 4, 16)[0])
    assert not torch.allclose(loaded.compress(x, 4, 16)[0], tok.compress(x, 4, 16, "mean")[0])
    with pytest.raises(ValueError, match="no merge weights"):
        ExtensibleTokenizer.from_llm(tiny_llm).downscale(torch.zeros(4, 8), 2, "merge")


def test_the_two_layer_projector_starts_as_the_one_layer_adapter_and_round_trips(
    tiny_llm, tmp_path
):
    one = ExtensibleTokenizer.from_llm(
        tiny_llm, TokenizerConfig(num_layers=1, adapter=AdapterConfig("rmsnorm_linear"))
    )
    two_cfg = TokenizerConfig(num_layers=1, adapter=AdapterConfig("rmsnorm_linear2"))
    two = ExtensibleTokenizer.from_llm(tiny_llm, two_cfg)
    x = ids(9)[None]
    torch.testing.assert_close(two(x), one(x))  # proj2 = identity at first
    with torch.no_grad():
        two.adapter.proj2.weight.mul_(1.5)
    two.save_pretrained(tmp_path)
    again = ExtensibleTokenizer.from_pretrained(tmp_path, tiny_llm)
    assert torch.equal(again(x), two(x)) and again.adapter.proj2 is not None

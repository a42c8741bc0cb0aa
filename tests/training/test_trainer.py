"""Two-stream training on the tiny Llama: batched rows, frozen LLM, exact resume."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from extok_rag.config import AdapterConfig, TokenizerConfig, TrainConfig
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.training.objective import ar_rows, encode_sequence, row_losses
from extok_rag.training.trainer import Trainer

CFG = TrainConfig(
    tokenizer=TokenizerConfig(
        num_layers=2, adapter=AdapterConfig("rmsnorm_linear", standardize=True)
    ),
    seq_len=64,
    chunk_len=16,
    k_choices=(2, 4),
    max_steps=4,
    grad_accum=2,
    warmup_steps=1,
    lora_rank=4,
    probe_every=2,
    probe_sequences=3,
    checkpoint_every=2,
    stats_sequences=4,
    lr=1e-2,
    adapter_lr=1e-2,
    dtype="float32",
)


def packed(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, 259, size=(n, 64), dtype=np.int64)


@pytest.fixture
def data():
    return packed(12, 0), packed(4, 1)


def test_ar_rows_see_only_earlier_chunks(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))
    chunks = torch.as_tensor(packed(1, 2)[0]).view(4, 16)
    embeds = encode_sequence(tok, chunks, k=4, method="strided")
    rows = ar_rows(chunks, embeds)
    assert [len(r[0]) for r in rows] == [4, 8, 12]
    for i, row in enumerate(rows, start=1):
        assert torch.equal(row[0].embeds, torch.cat(embeds[:i]))
        assert torch.equal(row[1].ids, chunks[i])
    assert row_losses(tiny_llm, rows).count.tolist() == [16, 16, 16]
    assert row_losses(tiny_llm, ar_rows(chunks, embeds, raw_len=5)).count.tolist() == [5, 5, 5]


def test_only_the_tokenizer_learns(tiny_llm, data, tmp_path):
    before = {n: p.clone() for n, p in tiny_llm.model.named_parameters()}
    trainer = Trainer(replace(CFG, max_steps=1, probe_every=0), tiny_llm, *data, tmp_path)
    lora_b = trainer.tokenizer.encoder.layers[0].self_attn.q_proj.lora_b.clone()
    trainer.train_step()
    for name, param in tiny_llm.model.named_parameters():
        assert param.grad is None and not param.requires_grad, name
        assert torch.equal(param, before[name]), name
    assert not torch.equal(trainer.tokenizer.encoder.layers[0].self_attn.q_proj.lora_b, lora_b)
    assert trainer.tokenizer.encoder.embed_tokens.weight.grad is None


def test_standardisation_is_fitted_from_training_data(tiny_llm, data, tmp_path):
    trainer = Trainer(CFG, tiny_llm, *data, tmp_path)
    adapter = trainer.tokenizer.adapter
    assert not torch.equal(adapter.mean, torch.zeros_like(adapter.mean))
    states = trainer.tokenizer(torch.as_tensor(data[0][:4]).view(16, 16))
    assert states[:, 1:].std() < 3 * adapter.norm.weight.abs().mean()


def test_killed_and_resumed_run_continues_exactly(tiny_llm, data, tmp_path):
    straight = Trainer(CFG, tiny_llm, *data, tmp_path / "a")
    straight.run()

    class Killed(Exception):
        pass

    def kill_at_step_3(event):
        if event["step"] == 3 and "loss" in event:
            raise Killed  # after step 3 is logged, before its checkpoint (every 2 steps)

    with pytest.raises(Killed):
        Trainer(CFG, tiny_llm, *data, tmp_path / "b").run(kill_at_step_3)
    resumed = Trainer(CFG, tiny_llm, *data, tmp_path / "b")
    assert resumed.step == 2
    resumed.run()
    for name, tensor in straight.tokenizer.state_dict().items():
        assert torch.equal(tensor, resumed.tokenizer.state_dict()[name]), name
    logs = [
        [json.loads(x) for x in (tmp_path / d / "log.jsonl").read_text().splitlines()]
        for d in ("a", "b")
    ]
    trained = [[r["step"] for r in log if "hardware" not in r] for log in logs]
    assert trained[0] == trained[1]
    assert [r["step"] for r in logs[1] if "hardware" in r] == [0, 2]  # one per part of the run
    assert logs[1][0]["hardware"]["device"] == "cpu"
    losses = [[r["loss"] for r in log if "loss" in r] for log in logs]
    assert losses[0] == losses[1]


def test_probe_reports_paired_rows_and_checkpoint_exports(tiny_llm, data, tmp_path):
    trainer = Trainer(replace(CFG, max_steps=2), tiny_llm, *data, tmp_path)
    events = []
    trainer.run(events.append)
    probes = [e["probe"] for e in events if "probe" in e]
    assert [set(p) for p in probes] == [{"none", "raw", "k2", "k16", "self_k2", "other_k2"}] * 2
    assert probes[0]["none"] == probes[1]["none"]
    trainer.export(tmp_path / "export")
    loaded = ExtensibleTokenizer.from_pretrained(tmp_path / "export", tiny_llm)
    x = torch.as_tensor(data[1][0][:16])[None]
    torch.testing.assert_close(loaded(x), trainer.tokenizer(x).detach())


def test_a_failed_probe_is_recorded_and_training_goes_on(tiny_llm, data, tmp_path):
    class Broken(RuntimeError):
        pass

    def explode(llm, tokenizer):
        tokenizer.eval()  # as a probe does, then raises before putting the mode back
        raise Broken("no cache attribute")

    trainer = Trainer(replace(CFG, max_steps=3, probe_failure="record"), tiny_llm, *data, tmp_path)
    trainer.probe.run = explode
    events = []
    trainer.run(events.append)
    assert trainer.step == 3 and trainer.probe is None  # dropped after its first failure
    failed = [e for e in events if "probe" in e]
    assert [e["step"] for e in failed] == [0]
    assert failed[0]["probe"] == {"error": "Broken: no cache attribute"}
    assert trainer.tokenizer.training
    assert [e["step"] for e in events if "loss" in e] == [1, 2, 3]

    # a full card is not a broken probe: recorded, and tried again at the next probe
    full_once = Trainer(replace(CFG, probe_failure="record"), tiny_llm, *data, tmp_path / "oom")
    run, calls = full_once.probe.run, []

    def out_of_memory_once(llm, tokenizer):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return run(llm, tokenizer)

    full_once.probe.run = out_of_memory_once
    events = []
    full_once.run(events.append)
    probes = [e["probe"] for e in events if "probe" in e]
    assert probes[0] == {"error": "OutOfMemoryError: CUDA out of memory"}
    assert len(probes) == 3 and "k2" in probes[1] and full_once.probe is not None

    strict = Trainer(CFG, tiny_llm, *data, tmp_path / "strict")
    strict.probe.run = explode
    with pytest.raises(Broken):
        strict.run()


def test_a_run_in_parts_matches_a_straight_run(tiny_llm, data, tmp_path):
    straight = Trainer(CFG, tiny_llm, *data, tmp_path / "a")
    straight.run()
    first = Trainer(CFG, tiny_llm, *data, tmp_path / "b")
    first.run(stop_at=2)
    assert first.step == 2 and (tmp_path / "b" / "checkpoint").is_dir()
    rest = Trainer(CFG, tiny_llm, *data, tmp_path / "b")
    rest.run()
    assert rest.step == CFG.max_steps
    for name, tensor in straight.tokenizer.state_dict().items():
        assert torch.equal(tensor, rest.tokenizer.state_dict()[name]), name

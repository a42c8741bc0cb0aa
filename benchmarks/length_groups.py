"""Rows batched by length (`models.length_groups`) against one padded batch: the positions a
training micro-step computes at the v3 GPU recipe, and its seconds on this CPU.

    .venv/bin/python benchmarks/length_groups.py [--micro-steps 12] [--reps 2]

A micro-step mixes k from {1, 2, 4, 8}, so its rows differ in length by up to 8×; padded to the
longest in one batch, most positions are padding. "one batch" = every row (every paragraph, for
the encoder) in one padded batch, as before this change (`overhead` 10⁹); "grouped" = the cut
`length_groups` makes at the device's overhead (part 1: a GPU's, part 2: this CPU's).

Both parts stand at the step where reconstruction's curriculum ends (full-length rows).
1. Positions at `research/configs/v3/gpu.json` (64 frame rows, 16 packed sequences per
   micro-step), over `--micro-steps` micro-steps per objective, the encoder stubbed (lengths
   do not depend on its values): the frozen LLM's positions (rows x longest) and the encoder's.
2. Seconds of one micro-step's forward + backward on this CPU, same recipe at 16 frame rows /
   4 sequences, bf16 autocast where native: the two batchings interleaved on the same
   micro-steps (the same rows), medians of `--reps` rounds after a warm-up.
Writes section `length-groups` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.cli.train_cmd import load_config, load_frame_data
from extok_rag.config import RuntimeConfig, home_dir
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.length_groups import (
    CPU_BATCH_OVERHEAD,
    GPU_BATCH_OVERHEAD,
    length_groups,
    padded_positions,
)
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import row_length
from extok_rag.training import batches
from extok_rag.training import objective as objective_module
from extok_rag.training.objective import row_losses
from extok_rag.training.shards import PackedSequences
from extok_rag.training.trainer import Trainer

RECIPE = Path(__file__).resolve().parent.parent / "research/configs/v3/gpu.json"
OBJECTIVES = ("ar", "reconstruction", "span", "qa", "expand")
ONE_BATCH = 10**9


@contextmanager
def one_batch():
    """Every row in one padded batch: the batching before `length_groups`."""
    saved = objective_module.row_losses.__defaults__, ExtensibleTokenizer.encode.__defaults__
    objective_module.row_losses.__defaults__ = (ONE_BATCH,)
    ExtensibleTokenizer.encode.__defaults__ = (ONE_BATCH,)
    try:
        yield
    finally:
        objective_module.row_losses.__defaults__, ExtensibleTokenizer.encode.__defaults__ = saved


def trainer_for(llm: FrozenLLM, overrides: list[str], out: Path) -> Trainer:
    data_dir = home_dir() / "training-data"
    cfg = load_config(
        [RECIPE],
        [
            *overrides,
            "grad_accum=1",
            "probe_at_start=false",
            "probe_every=0",
            "answer_probe_every=0",
            "recon_probe_every=0",
            "stats_sequences=8",
            f"data_dir={data_dir}",
            f"out_dir={out}",
        ],
    )
    train, val = (PackedSequences(data_dir / f, cfg.seq_len) for f in ("train.bin", "val.bin"))
    frame, _ = load_frame_data(cfg, data_dir)
    trainer = Trainer(cfg, llm, train, val, out, frame)
    trainer.step = cfg.recon_curriculum_steps  # reconstruction rows at their full length
    return trainer


class Stop(Exception):
    """Raised where the LLM would read the rows: their lengths are known, nothing to compute."""


def positions(llm: FrozenLLM, micro_steps: int) -> dict[str, dict[str, float]]:
    """Per objective: LLM and encoder positions, one batch vs grouped, summed over micro-steps."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(llm, [], Path(tmp))
        tok, d = trainer.tokenizer, llm.hidden_size
        tok.forward = lambda ids, mask=None: torch.zeros(*ids.shape, d)  # lengths only
        seen: dict[str, list[list[int]]] = {"llm": [], "encoder": []}
        encode = tok.encode

        def recording_encode(chunks, overhead=ONE_BATCH):
            seen["encoder"].append([int(c.numel()) for c in chunks])
            return encode(chunks, overhead)

        def recording_losses(llm, rows, overhead=ONE_BATCH):
            seen["llm"].append([row_length(row) for row in rows])
            raise Stop

        tok.encode, batches.row_losses = recording_encode, recording_losses
        out = {}
        try:
            for objective in OBJECTIVES:
                seen["llm"].clear(), seen["encoder"].clear()
                for g in range(micro_steps):
                    try:
                        with torch.no_grad():
                            trainer.micro_step(10_000 + g, objective)
                    except Stop:
                        pass
                row = {"real": 0, "one": 0, "grouped": 0, "groups": 0, "enc_real": 0}
                row.update(enc_one=0, enc_grouped=0)
                for lengths in seen["llm"]:
                    groups = length_groups(lengths, GPU_BATCH_OVERHEAD)
                    row["real"] += sum(lengths)
                    row["one"] += len(lengths) * max(lengths)
                    row["grouped"] += padded_positions(lengths, groups)
                    row["groups"] += len(groups) / micro_steps
                for lengths in seen["encoder"]:
                    row["enc_real"] += sum(lengths)
                    row["enc_one"] += len(lengths) * max(lengths)
                    row["enc_grouped"] += padded_positions(
                        lengths, length_groups(lengths, GPU_BATCH_OVERHEAD)
                    )
                out[objective] = row
                print(objective, row, flush=True)
        finally:
            batches.row_losses = row_losses
    return out


def seconds(llm: FrozenLLM, reps: int) -> dict[str, tuple[float, float]]:
    """Per objective: median seconds of a micro-step's forward + backward, one batch vs grouped,
    interleaved on the same micro-steps."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(llm, ["frame_rows=16", "seq_batch=4"], Path(tmp))

        def step(g: int, objective: str) -> float:
            start = time.perf_counter()
            losses, _ = trainer.micro_step(g, objective)
            losses.mean().backward()
            trainer.optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        for objective in OBJECTIVES:
            step(20_000, objective)  # warm-up
            one, grouped = [], []
            for rep in range(reps):
                g = 20_001 + rep
                with one_batch():
                    one.append(step(g, objective))
                grouped.append(step(g, objective))
            out[objective] = statistics.median(one), statistics.median(grouped)
            print(objective, out[objective], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--micro-steps", type=int, default=12)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    quiet_transformers()
    probe = load_config([RECIPE], [])
    runtime = RuntimeConfig(device="cpu", dtype=probe.resolved_dtype("cpu"))
    llm = FrozenLLM.load(None, runtime)
    pos = positions(llm, args.micro_steps)
    sec = seconds(llm, args.reps)
    lines = [
        "## Rows batched by length: a training micro-step's padding (`models.length_groups`)",
        "",
        f"`benchmarks/length_groups.py` — {machine_line()}; {runtime.dtype}.",
        "",
        f"Positions at the v3 GPU recipe (`research/configs/v3/gpu.json`: 64 frame rows or "
        f"16 packed sequences per micro-step, k from {{1, 2, 4, 8}}), summed over "
        f"{args.micro_steps} micro-steps per objective; the encoder stubbed (lengths only). "
        "'one batch' pads every row to the micro-step's longest, as before; 'grouped' is "
        f"`length_groups`' cut at a GPU's overhead ({GPU_BATCH_OVERHEAD:,} positions a batch):",
        "",
        "| objective | LLM real | LLM one batch | LLM grouped | batches per micro-step | "
        "encoder real | encoder one batch | encoder grouped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for objective, r in pos.items():
        encoder = (  # ar encodes its packed chunks directly: all 256 long, no padding
            f"{r['enc_real']:,} | {r['enc_one']:,} | {r['enc_grouped']:,}"
            if r["enc_real"]
            else "— | — | —"
        )
        lines.append(
            f"| {objective} | {r['real']:,} | {r['one']:,} ({r['one'] / r['real']:.2f}×) | "
            f"{r['grouped']:,} ({r['grouped'] / r['real']:.2f}×) | {r['groups']:.1f} | "
            f"{encoder} |"
        )
    lines += [
        "",
        f"Seconds of one micro-step's forward + backward on this CPU (16 frame rows or 4 "
        f"sequences; grouped at this CPU's overhead, {CPU_BATCH_OVERHEAD} positions a batch), the "
        f"same micro-steps both ways, interleaved; median of {args.reps}:",
        "",
        "| objective | one batch s | grouped s | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for objective, (one, grouped) in sec.items():
        lines.append(f"| {objective} | {one:.2f} | {grouped:.2f} | {one / grouped:.2f}× |")
    write_section("length-groups", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

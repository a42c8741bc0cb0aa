"""Seconds per training step, per objective: the vocabulary head at every position (before)
against only at scored positions (after), and bf16 autocast against fp32.

    .venv/bin/python benchmarks/train_step_speed.py [--steps 3] [--bf16-steps 1]

Each objective trains the shipped checkpoint (`init_from=shipped`) for `--steps` optimiser
steps of one micro-step each (a frame objective: `frame_rows` = 8 examples; `ar`: one packed
sequence of 4 x 256 tokens, v1's first-64-token loss), after one untimed warm-up step; the
median step time is reported. "before" replaces `FrozenLLM.scored_logits` with the old
computation (the head over all positions, then the scored ones picked). Writes section
`train-step-speed` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section

from extok_rag.cli.console import quiet_transformers
from extok_rag.config import MixPhase, RuntimeConfig, TrainConfig, home_dir
from extok_rag.models.llm import FrozenLLM
from extok_rag.training.frame import FrameData
from extok_rag.training.shards import PackedSequences
from extok_rag.training.trainer import Trainer

OBJECTIVES = ("ar", "qa", "span", "reconstruction", "distill")


def config(objective: str, dtype: str) -> TrainConfig:
    return TrainConfig(
        init_from="shipped",
        mix=(MixPhase({objective: 1.0}),),
        k_choices=(2, 4, 4, 8) if objective != "ar" else (2, 4, 8, 16),
        qa_distractors=0,
        loss_first_tokens=64,
        recon_chunks=(2, 2),
        grad_accum=1,
        probe_every=0,
        checkpoint_every=10_000,
        dtype=dtype,  # type: ignore[arg-type]
    )


@contextmanager
def full_head():
    """The head over every position (the code before this change), for the 'before' rows."""
    original = FrozenLLM.scored_logits

    def scored_logits(self, batch):
        return self.logits(batch)[:, :-1][batch.next_token_targets].float()

    FrozenLLM.scored_logits = scored_logits
    try:
        yield
    finally:
        FrozenLLM.scored_logits = original


def time_steps(cfg, llms, data, frame, steps: int) -> float:
    llm = llms[cfg.resolved_dtype("cpu")]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, llm, *data, Path(tmp), frame)
        trainer.train_step()  # warm-up, untimed
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--bf16-steps", type=int, default=1, help="0: skip the bf16 rows")
    parser.add_argument(
        "--bf16-objectives", default="ar", help="objectives also timed in bf16 (slow here)"
    )
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    args = parser.parse_args()
    quiet_transformers()
    data_dir = home_dir() / "training-data"
    data = tuple(PackedSequences(data_dir / f, 1024) for f in ("train.bin", "val.bin"))
    frame = FrameData.load(data_dir)
    dtypes = ("float32", "bfloat16") if args.bf16_steps else ("float32",)
    llms = {d: FrozenLLM.load(None, RuntimeConfig(device="cpu", dtype=d)) for d in dtypes}
    lines = [
        "## Seconds per training step, per objective",
        "",
        f"`benchmarks/train_step_speed.py` — {machine_line()}. One micro-step per optimiser "
        "step (frame objectives: 8 examples, gold paragraphs only, k from 2/4/4/8; ar: one "
        "4×256 sequence, loss on the first 64 tokens of each predicted chunk); LoRA r16 on 2 "
        f"layers + adapter from the shipped checkpoint; median of {args.steps} steps after a "
        f"warm-up step (bf16: {args.bf16_steps} step, {args.bf16_objectives} only).",
        "",
        "| objective | fp32, head everywhere (before) | fp32, head at scored positions "
        "(after) | speed-up | bf16 autocast, head at scored positions |",
        "|---|---:|---:|---:|---:|",
    ]
    for objective in args.objectives.split(","):
        cfg = config(objective, "float32")
        with full_head():
            before = time_steps(cfg, llms, data, frame, args.steps)
        after = time_steps(cfg, llms, data, frame, args.steps)
        bf16 = "not run"
        if args.bf16_steps and objective in args.bf16_objectives.split(","):
            bf16_cfg = replace(cfg, dtype="bfloat16")
            bf16 = f"{time_steps(bf16_cfg, llms, data, frame, args.bf16_steps):.2f}"
        lines.append(
            f"| {objective} | {before:.2f} | {after:.2f} | {before / after:.2f}× | {bf16} |"
        )
        print(lines[-1], flush=True)
    write_section("train-step-speed", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

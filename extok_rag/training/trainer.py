"""The training loop: two-stream AR (or reconstruction warm-up) with gradient accumulation,
bf16 autocast, an lr schedule, a periodic content probe, a JSONL log and exact resume.

Everything that decides what a step sees is a function of (seed, step): the data order is a
seeded permutation per epoch and each sequence's k is drawn from a generator seeded by its
global index, so a resumed run continues exactly where a killed one stopped.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from extok_rag.config import TrainConfig, write_json
from extok_rag.models.llm import FrozenLLM
from extok_rag.training.objective import (
    ChunkLosses,
    ar_rows,
    encode_sequence,
    reconstruction_rows,
    row_losses,
)
from extok_rag.training.probe import ContentProbe
from extok_rag.training.setup import build_tokenizer, fit_regression_init, fit_standardisation

CHECKPOINT, LOG = "checkpoint", "log.jsonl"


class Sequences(Protocol):
    """Packed token sequences: `len()` and `[i]` -> (seq_len,) integer array."""

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> np.ndarray: ...


@dataclass
class StepStats:
    step: int
    loss: float
    lr: float
    ks: list[int]
    tokens: int  # raw tokens predicted this step
    seconds: float


def hardware() -> dict:
    """What this part of a run trains on (a resumed run may move between machines)."""
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "host": platform.node(),
    }


class Trainer:
    def __init__(
        self, cfg: TrainConfig, llm: FrozenLLM, train: Sequences, val: Sequences, out_dir: Path
    ):
        self.cfg, self.llm, self.train_data, self.out_dir = cfg, llm, train, out_dir
        self.tokenizer = build_tokenizer(llm, cfg)
        self.optimizer = torch.optim.AdamW(self.param_groups(), weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.probe = (
            ContentProbe(
                self.chunks_of(val, range(min(len(val), cfg.probe_sequences))), cfg.downscale
            )
            if cfg.probe_every
            else None
        )
        self.step, self.elapsed = 0, 0.0
        out_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume():
            stats = self.chunks_of(train, range(min(len(train), cfg.stats_sequences)))
            fit_standardisation(self.tokenizer, stats.flatten(0, 1))
            if cfg.adapter_init == "regression":
                r2 = fit_regression_init(self.tokenizer, llm, stats.flatten(0, 1))
                self.log({"step": 0, "regression_init_r2": r2})

    # -- setup ------------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        adapter = [
            p
            for n, p in self.tokenizer.named_parameters()
            if p.requires_grad and n.startswith("adapter.")
        ]
        encoder = [
            p
            for n, p in self.tokenizer.named_parameters()
            if p.requires_grad and not n.startswith("adapter.")
        ]
        groups = [
            {"params": adapter, "lr": self.cfg.adapter_lr},
            {"params": encoder, "lr": self.cfg.lr},
        ]
        return [g for g in groups if g["params"]]

    def lr_factor(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        if cfg.schedule == "linear":
            return max(0.0, 1.0 - progress)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    def chunks_of(self, data: Sequences, indices) -> torch.Tensor:  # (N, C, L)
        C, L = self.cfg.chunks_per_sequence, self.cfg.chunk_len
        rows = [torch.as_tensor(np.asarray(data[i][: C * L], dtype=np.int64)) for i in indices]
        return torch.stack(rows).view(len(rows), C, L)

    # -- data order -------------------------------------------------------------------------
    def sequence_index(self, g: int) -> int:
        """The g-th sequence seen by the run: a seeded permutation per epoch."""
        n = len(self.train_data)
        perm = np.random.default_rng([self.cfg.seed, g // n]).permutation(n)
        return int(perm[g % n])

    def k_for(self, g: int) -> int:
        return random.Random(self.cfg.seed * 1_000_003 + g).choice(self.cfg.k_choices)

    # -- one step ---------------------------------------------------------------------------
    def micro_step(self, g: int, objective: str) -> tuple[ChunkLosses, int]:
        chunks = self.chunks_of(self.train_data, [self.sequence_index(g)])[0]  # (C, L)
        k = self.k_for(g)
        autocast = torch.autocast(
            self.llm.device.type, dtype=torch.bfloat16, enabled=self.cfg.dtype == "bfloat16"
        )
        with autocast:
            embeds = encode_sequence(self.tokenizer, chunks, k, self.cfg.downscale)
            build = reconstruction_rows if objective == "reconstruction" else ar_rows
            losses = row_losses(self.llm, build(chunks, embeds, self.cfg.loss_first_tokens))
        return losses, k

    def train_step(self) -> StepStats:
        cfg = self.cfg
        start = time.perf_counter()
        objective = "reconstruction" if self.step < cfg.reconstruction_steps else cfg.objective
        self.tokenizer.train()
        total, count, ks = 0.0, 0, []
        for micro in range(cfg.grad_accum):
            losses, k = self.micro_step(self.step * cfg.grad_accum + micro, objective)
            (losses.mean() / cfg.grad_accum).backward()
            total += float(losses.nll.detach().sum())
            count += int(losses.count.sum())
            ks.append(k)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[-1]["lr"]
        self.scheduler.step()
        self.step += 1
        seconds = time.perf_counter() - start
        self.elapsed += seconds
        return StepStats(self.step, total / max(count, 1), lr, ks, count, seconds)

    def run(
        self, on_event: Callable[[dict], None] | None = None, stop_at: int | None = None
    ) -> None:
        """Train until `max_steps` (or `max_minutes`, or step `stop_at`: a run in parts on the
        same schedule), logging, probing and checkpointing."""
        emit = on_event or (lambda _e: None)
        self.log({"step": self.step, "elapsed_s": self.elapsed, "hardware": hardware()})
        if self.step == 0 and self.probe is not None and self.cfg.probe_at_start:
            emit(self.log({"step": 0, "elapsed_s": 0.0, "probe": self.probe_now()}))
        while not self.finished(stop_at):
            stats = self.train_step()
            emit(
                self.log(
                    {
                        "step": stats.step,
                        "loss": stats.loss,
                        "lr": stats.lr,
                        "k": stats.ks,
                        "tokens": stats.tokens,
                        "tokens_per_s": stats.tokens / stats.seconds,
                        "step_s": stats.seconds,
                        "elapsed_s": self.elapsed,
                    }
                )
            )
            last = self.finished(stop_at)
            if self.probe is not None and (self.step % self.cfg.probe_every == 0 or last):
                emit(
                    self.log(
                        {"step": self.step, "elapsed_s": self.elapsed, "probe": self.probe_now()}
                    )
                )
            if self.step % self.cfg.checkpoint_every == 0 or last:
                self.save_checkpoint()

    def finished(self, stop_at: int | None = None) -> bool:
        budget = self.cfg.max_minutes * 60
        last = min(self.cfg.max_steps, stop_at or self.cfg.max_steps)
        return self.step >= last or (budget > 0 and self.elapsed >= budget)

    def probe_now(self) -> dict[str, float]:
        assert self.probe is not None
        with torch.autocast(
            self.llm.device.type, dtype=torch.bfloat16, enabled=self.cfg.dtype == "bfloat16"
        ):
            return self.probe.run(self.llm, self.tokenizer)

    # -- log and checkpoints ----------------------------------------------------------------
    def log(self, record: dict) -> dict:
        with (self.out_dir / LOG).open("a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def save_checkpoint(self) -> None:
        """Write checkpoint.tmp fully, then swap it in: a kill at any moment leaves one whole
        checkpoint (the old one, or the new one)."""
        final, tmp, old = (
            self.out_dir / n for n in (CHECKPOINT, CHECKPOINT + ".tmp", CHECKPOINT + ".old")
        )
        shutil.rmtree(tmp, ignore_errors=True)
        self.tokenizer.save_pretrained(tmp, full=False)
        torch.save(
            {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
            tmp / "optimizer.pt",
        )
        write_json(
            tmp / "trainer_state.json",
            {"step": self.step, "elapsed_s": self.elapsed, "config": self.cfg.to_dict()},
        )
        if final.exists():
            final.replace(old)
        tmp.replace(final)
        shutil.rmtree(old, ignore_errors=True)

    def resume(self) -> bool:
        """Continue from the run's checkpoint if there is one (then the log is cut to it)."""
        path = self.out_dir / CHECKPOINT
        if not path.exists() and (self.out_dir / (CHECKPOINT + ".old")).exists():
            (self.out_dir / (CHECKPOINT + ".old")).replace(path)  # killed mid-swap
        if not path.exists():
            return False
        self.tokenizer.load_weights(path, self.llm)
        state = torch.load(path / "optimizer.pt", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        meta = json.loads((path / "trainer_state.json").read_text())
        self.step, self.elapsed = int(meta["step"]), float(meta["elapsed_s"])
        self.truncate_log()
        return True

    def truncate_log(self) -> None:
        """Drop log records written after the checkpoint, so the curve continues cleanly."""
        log = self.out_dir / LOG
        if not log.exists():
            return
        keep = [
            line
            for line in log.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= self.step
        ]
        log.write_text("".join(line + "\n" for line in keep))

    def export(self, path: Path) -> None:
        """The trained tokenizer alone (only what training changed), for `index` and `ask`."""
        self.tokenizer.save_pretrained(path, full=False)

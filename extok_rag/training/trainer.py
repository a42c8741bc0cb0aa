"""The training loop: a mixture of objectives (two-stream AR, chunk reconstruction, and the
frame objectives qa / span / reconstruction / distill) with gradient accumulation, autocast
where the hardware has native bf16, an lr schedule, periodic content and answer probes, a JSONL
log and exact resume.

Everything that decides what a step sees is a function of (seed, micro-step index): the
objective drawn, the data order (a seeded permutation per epoch for packed sequences, seeded
draws for frame examples) and every k, so a resumed run continues exactly where a killed one
stopped.
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

from extok_rag.config import (
    FRAME_OBJECTIVES,
    QA_OBJECTIVES,
    TrainConfig,
    cpu_description,
    write_json,
)
from extok_rag.datasets.training_files import QAExample
from extok_rag.models.llm import FrozenLLM
from extok_rag.training.answer_probe import AnswerProbe, ReconstructionProbe
from extok_rag.training.frame import (
    FrameData,
    FrameExample,
    compressed_rows,
    expand_rows,
    qa_example,
    raw_rows,
    reconstruction_example,
    span_example,
    truncate_text,
)
from extok_rag.training.objective import (
    ChunkLosses,
    ar_rows,
    distill_losses,
    encode_sequences,
    reconstruction_rows,
    row_losses,
)
from extok_rag.training.probe import ContentProbe
from extok_rag.training.setup import (
    build_tokenizer,
    fit_regression_init,
    fit_standardisation,
    load_init,
    with_init_shape,
)

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
    cpu_seconds: float  # CPU time of this process over the step (all its threads)
    objective_losses: dict[str, float]  # mean loss per objective drawn this step


def hardware() -> dict:
    """What this part of a run trains on (a resumed run may move between machines)."""
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "cpu": cpu_description(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "host": platform.node(),
    }


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        llm: FrozenLLM,
        train: Sequences,
        val: Sequences,
        out_dir: Path,
        frame: FrameData | None = None,
        probe_items: list[QAExample] | None = None,
    ):
        cfg = with_init_shape(cfg)
        self.cfg, self.llm, self.train_data, self.out_dir = cfg, llm, train, out_dir
        self.frame = frame or FrameData([], [])
        self.dtype = cfg.resolved_dtype(llm.device.type)
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
        self.answer_probe = self.frame_probe(
            AnswerProbe,
            probe_items,
            cfg.answer_probe_every,
            context_len=cfg.context_len,
            greedy_items=cfg.answer_probe_greedy,
        )
        self.recon_probe = self.frame_probe(
            ReconstructionProbe, probe_items, cfg.recon_probe_every, recon_len=cfg.recon_len
        )
        self.step, self.elapsed, self.cpu_elapsed = 0, 0.0, 0.0
        out_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume():
            self.initialise(train)

    def frame_probe(self, cls: type[AnswerProbe], items, every: int, **kwargs):
        """A probe on the held-out QA items (None when it never runs or there are none)."""
        if not (every and items):
            return None
        cfg = self.cfg
        return cls.sample(
            items, cfg.answer_probe_items, ks=cfg.answer_probe_ks, method=cfg.downscale, **kwargs
        )

    def initialise(self, train: Sequences) -> None:
        """A new run: a checkpoint's weights (`init_from`), or fitted adapter statistics."""
        cfg = self.cfg
        if cfg.init_from:
            load_init(self.tokenizer, self.llm, cfg.init_from)
            return
        stats = self.chunks_of(train, range(min(len(train), cfg.stats_sequences)))
        fit_standardisation(self.tokenizer, stats.flatten(0, 1))
        if cfg.adapter_init == "regression":
            r2 = fit_regression_init(self.tokenizer, self.llm, stats.flatten(0, 1))
            self.log({"step": 0, "regression_init_r2": r2})

    # -- setup ------------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """Adapter at adapter_lr, merge tree at merge_lr, the rest (LoRA or layers) at lr."""
        cfg = self.cfg
        trained = [(n, p) for n, p in self.tokenizer.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in trained if n.startswith("adapter.")], "lr": cfg.adapter_lr},
            {"params": [p for n, p in trained if n.startswith("merge.")], "lr": cfg.merge_lr},
            {
                "params": [p for n, p in trained if not n.startswith(("adapter.", "merge."))],
                "lr": cfg.lr,
            },
        ]
        return [g for g in groups if g["params"]]

    def lr_factor(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        if cfg.schedule_clock == "budget" and cfg.max_minutes > 0:
            progress = max(progress, self.budget_spent() / (cfg.max_minutes * 60))
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

    def objective_for(self, g: int) -> str:
        """The objective of micro-step g, drawn with the weights of its step's phase."""
        phase = self.cfg.phase_at(g // self.cfg.grad_accum)
        names = sorted(phase.weights)
        rng = random.Random(f"objective:{self.cfg.seed}:{g}")
        return rng.choices(names, [phase.weights[n] for n in names])[0]

    def autocast(self):
        return torch.autocast(
            self.llm.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16"
        )

    # -- one step ---------------------------------------------------------------------------
    def micro_step(self, g: int, objective: str) -> tuple[ChunkLosses, list[int]]:
        with self.autocast():
            if objective in FRAME_OBJECTIVES:
                return self.frame_losses(g, objective)
            return self.sequence_losses(g, objective)

    def sequence_losses(self, g: int, objective: str) -> tuple[ChunkLosses, list[int]]:
        """ar / chunk_reconstruction on `seq_batch` packed sequences (the g-th micro-step's),
        each at its own k: one batched encode, one batched LLM call."""
        n = self.cfg.seq_batch
        draws = range(g * n, (g + 1) * n)  # seq_batch 1: sequence g at k_for(g), as before
        chunks = self.chunks_of(self.train_data, [self.sequence_index(i) for i in draws])
        ks = [self.k_for(i) for i in draws]
        embeds = encode_sequences(self.tokenizer, chunks, ks, self.cfg.downscale)
        build = reconstruction_rows if objective == "chunk_reconstruction" else ar_rows
        rows = [
            row
            for seq, seq_embeds in zip(chunks, embeds, strict=True)
            for row in build(seq, seq_embeds, self.cfg.loss_first_tokens)
        ]
        return row_losses(self.llm, rows), ks

    def frame_losses(self, g: int, objective: str) -> tuple[ChunkLosses, list[int]]:
        """A batch of `frame_rows` examples of a frame objective, each at its own k."""
        cfg = self.cfg
        rng = random.Random(f"frame:{cfg.seed}:{g}")
        examples = self.frame_examples(objective, rng, cfg.frame_rows)
        ks = [rng.choice(cfg.k_choices) for _ in examples]
        max_tokens = cfg.recon_len if objective == "reconstruction" else cfg.context_len
        if objective == "expand":
            shares = [rng.uniform(*cfg.expand_share) for _ in examples]
            rows = expand_rows(
                self.llm, self.tokenizer, examples, ks, shares, max_tokens, cfg.downscale
            )
            return row_losses(self.llm, rows), ks
        student = compressed_rows(self.llm, self.tokenizer, examples, ks, max_tokens, cfg.downscale)
        if objective == "distill":
            teacher = raw_rows(self.llm, examples, max_tokens)
            return distill_losses(self.llm, student, teacher, cfg.distill_temperature), ks
        return row_losses(self.llm, student), ks

    def frame_examples(self, objective: str, rng: random.Random, n: int) -> list[FrameExample]:
        cfg, frame = self.cfg, self.frame
        if objective in QA_OBJECTIVES:
            if not frame.qa:
                raise ValueError(f"objective {objective!r} needs QA pairs (qa_train.jsonl)")
            return [qa_example(p, rng, cfg.qa_distractors) for p in rng.choices(frame.qa, k=n)]
        if not frame.paragraphs:
            raise ValueError(f"objective {objective!r} needs paragraphs_train.jsonl")
        if objective == "reconstruction":
            m, length = self.recon_chunks(), self.recon_length()
            return [
                reconstruction_example(
                    [truncate_text(self.llm, p, length) for p in rng.sample(frame.paragraphs, m)]
                )
                for _ in range(n)
            ]
        examples: list[FrameExample] = []
        for _ in range(20 * n):  # span: paragraphs without a usable sentence are skipped
            text = truncate_text(self.llm, rng.choice(frame.paragraphs), cfg.context_len)
            example = span_example(text, rng)
            if example is not None:
                examples.append(example)
            if len(examples) == n:
                break
        return examples

    def recon_chunks(self) -> int:
        """Paragraphs per reconstruction row now: first -> last over the curriculum steps."""
        first, last = self.cfg.recon_chunks
        return round(first + (last - first) * self.curriculum_progress())

    def recon_length(self) -> int:
        """Tokens kept of each paragraph to reconstruct now: recon_len_start -> recon_len over
        the curriculum steps (REFRAG's lesson: reconstruction learns short before long)."""
        cfg = self.cfg
        if not cfg.recon_len_start:
            return cfg.recon_len
        return round(
            cfg.recon_len_start + (cfg.recon_len - cfg.recon_len_start) * self.curriculum_progress()
        )

    def curriculum_progress(self) -> float:
        return min(1.0, self.step / max(1, self.cfg.recon_curriculum_steps))

    def train_step(self) -> StepStats:
        cfg = self.cfg
        start, cpu_start = time.perf_counter(), time.process_time()
        self.tokenizer.train()
        total, count, ks = 0.0, 0, []
        by_objective: dict[str, list[float]] = {}
        for micro in range(cfg.grad_accum):
            g = self.step * cfg.grad_accum + micro
            objective = self.objective_for(g)
            losses, micro_ks = self.micro_step(g, objective)
            (losses.mean() / cfg.grad_accum).backward()
            total += float(losses.nll.detach().sum())
            count += int(losses.count.sum())
            ks += micro_ks
            by_objective.setdefault(objective, []).append(float(losses.mean().detach()))
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[-1]["lr"]
        self.scheduler.step()
        self.step += 1
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        self.elapsed += seconds
        self.cpu_elapsed += cpu
        means = {name: sum(v) / len(v) for name, v in by_objective.items()}
        return StepStats(self.step, total / max(count, 1), lr, ks, count, seconds, cpu, means)

    def run(
        self, on_event: Callable[[dict], None] | None = None, stop_at: int | None = None
    ) -> None:
        """Train until `max_steps` (or `max_minutes`, or step `stop_at`: a run in parts on the
        same schedule), logging, probing and checkpointing."""
        emit = on_event or (lambda _e: None)
        self.log(
            {
                "step": self.step,
                "elapsed_s": self.elapsed,
                "hardware": hardware(),
                "dtype": self.dtype,
            }
        )
        if self.step == 0 and self.cfg.probe_at_start:
            self.probes(emit, force=True)
        while not self.finished(stop_at):
            stats = self.train_step()
            emit(
                self.log(
                    {
                        "step": stats.step,
                        "loss": stats.loss,
                        "objectives": stats.objective_losses,
                        "lr": stats.lr,
                        "k": stats.ks,
                        "tokens": stats.tokens,
                        "tokens_per_s": stats.tokens / stats.seconds,
                        "step_s": stats.seconds,
                        "cpu_s": stats.cpu_seconds,
                        "elapsed_s": self.elapsed,
                        "cpu_elapsed_s": self.cpu_elapsed,
                    }
                )
            )
            last = self.finished(stop_at)
            self.probes(emit, force=last)
            if self.step % self.cfg.checkpoint_every == 0 or last:
                self.save_checkpoint()

    def probes(self, emit: Callable[[dict], None], force: bool) -> None:
        """The content probe and the answer probe, each when due (or `force`d)."""
        cfg = self.cfg
        due = [
            (name, probe)
            for name, probe, every in (
                ("probe", self.probe, cfg.probe_every),
                ("answer_probe", self.answer_probe, cfg.answer_probe_every),
                ("recon_probe", self.recon_probe, cfg.recon_probe_every),
            )
            if probe is not None and (force or self.step % every == 0)
        ]
        for name, probe in due:
            start = time.perf_counter()
            with self.autocast():
                result = probe.run(self.llm, self.tokenizer)
            seconds = time.perf_counter() - start
            emit(
                self.log(
                    {
                        "step": self.step,
                        "elapsed_s": self.elapsed,
                        name: result,
                        f"{name}_s": seconds,
                    }
                )
            )

    def budget_spent(self) -> float:
        """Training seconds spent, on the clock `budget_clock` names."""
        return getattr(self, "cpu_elapsed" if self.cfg.budget_clock == "cpu" else "elapsed", 0.0)

    def finished(self, stop_at: int | None = None) -> bool:
        budget = self.cfg.max_minutes * 60
        last = min(self.cfg.max_steps, stop_at or self.cfg.max_steps)
        return self.step >= last or (budget > 0 and self.budget_spent() >= budget)

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
            {
                "step": self.step,
                "elapsed_s": self.elapsed,
                "cpu_elapsed_s": self.cpu_elapsed,
                "config": self.cfg.to_dict(),
            },
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
        self.cpu_elapsed = float(meta.get("cpu_elapsed_s", 0.0))
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

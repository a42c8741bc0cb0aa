"""The training loop: a mixture of objectives (two-stream AR, chunk reconstruction, and the
frame objectives qa / span / reconstruction / distill) with gradient accumulation, autocast
where the hardware has native bf16, an lr schedule, periodic content and answer probes, a JSONL
log and exact resume.

Everything that decides what a step sees is a function of (seed, micro-step index): the
objective drawn, the data order (a seeded permutation per epoch for packed sequences, seeded
draws for frame examples) and every k, so a resumed run continues exactly where a killed one
stopped. Those draws are in `schedule.py`, the batches they make in `batches.py`, the log and
checkpoints in `checkpoint.py`.
"""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from extok_rag.config import FRAME_OBJECTIVES, TrainConfig, cpu_description
from extok_rag.datasets.training_files import QAExample
from extok_rag.models.llm import FrozenLLM
from extok_rag.training import batches, schedule
from extok_rag.training.answer_probe import AnswerProbe, ReconstructionProbe
from extok_rag.training.batches import Sequences
from extok_rag.training.checkpoint import (
    CHECKPOINT,
    LOG,
    append_log,
    load_checkpoint,
    save_checkpoint,
    truncate_log,
)
from extok_rag.training.frame import FrameData, FrameExample
from extok_rag.training.objective import ChunkLosses
from extok_rag.training.probe import ContentProbe, evaluating
from extok_rag.training.setup import (
    build_tokenizer,
    fit_regression_init,
    fit_standardisation,
    load_init,
    with_init_shape,
)

__all__ = ["CHECKPOINT", "LOG", "Sequences", "StepStats", "Trainer", "hardware"]


@dataclass
class StepStats:
    step: int
    loss: float
    lr: float
    ks: list[int]
    tokens: int  # raw tokens predicted this step
    seconds: float
    cpu_seconds: float  # CPU time of this process over the step (all its threads)
    build_seconds: float  # of `seconds`, the host's building frame rows (examples, tokens, spans)
    objective_losses: dict[str, float]  # mean loss per objective drawn this step
    contrast: float | None = None  # the contrast hinge per answer token, over the step's
    # qa / expand micro-steps (None: no contrast weight, or none drawn)


PROBES = ("probe", "answer_probe", "recon_probe")  # their results' keys in the log


def failed_probes(log: Iterable[dict]) -> list[tuple[int, str, str]]:
    """(step, probe, error) of each probe a run's log records as failed (`probe_failure`
    "record": one out of GPU memory is tried again at the next probe, any other dropped)."""
    return [
        (event["step"], name, event[name]["error"])
        for event in log
        for name in PROBES
        if isinstance(event.get(name), dict) and "error" in event[name]
    ]


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
            other_k=4 if 4 in cfg.answer_probe_ks else 0,  # content at ×4 as it trains
        )
        self.recon_probe = self.frame_probe(
            ReconstructionProbe, probe_items, cfg.recon_probe_every, recon_len=cfg.recon_len
        )
        self.step, self.elapsed, self.cpu_elapsed = 0, 0.0, 0.0
        self.build_seconds = 0.0  # this step's, so far (`frame_losses`)
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
        return schedule.lr_factor(self.cfg, step, self.budget_spent())

    def chunks_of(self, data: Sequences, indices) -> torch.Tensor:  # (N, C, L)
        return batches.chunks_of(data, indices, self.cfg)

    # -- data order -------------------------------------------------------------------------
    def sequence_index(self, g: int) -> int:
        """The g-th sequence seen by the run: a seeded permutation per epoch."""
        return schedule.sequence_index(self.cfg.seed, g, len(self.train_data))

    def k_for(self, g: int) -> int:
        return schedule.k_for(self.cfg, g)

    def objective_for(self, g: int) -> str:
        """The objective of micro-step g, drawn with the weights of its step's phase."""
        return schedule.objective_for(self.cfg, g)

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
        """ar / chunk_reconstruction on the g-th micro-step's packed sequences."""
        return batches.sequence_losses(
            self.llm, self.tokenizer, self.cfg, self.train_data, g, objective
        )

    def frame_losses(self, g: int, objective: str) -> tuple[ChunkLosses, list[int]]:
        """A batch of `frame_rows` examples of a frame objective, each at its own k. The
        host's time building them counts into `build_seconds` (on a GPU the encoder's kernels
        only queue meanwhile: what it measures is the host's share of a step)."""
        rng = random.Random(f"frame:{self.cfg.seed}:{g}")
        start = time.perf_counter()
        examples = self.frame_examples(objective, rng, self.cfg.frame_rows)
        rows = batches.frame_rows(self.llm, self.tokenizer, self.cfg, examples, rng, objective)
        self.build_seconds += time.perf_counter() - start
        return batches.frame_rows_losses(self.llm, self.cfg, rows), rows.ks

    def frame_examples(self, objective: str, rng: random.Random, n: int) -> list[FrameExample]:
        return batches.frame_examples(self.llm, self.frame, self.cfg, objective, rng, n, self.step)

    def recon_chunks(self) -> int:
        """Paragraphs per reconstruction row now: first -> last over the curriculum steps."""
        return schedule.recon_chunks(self.cfg, self.step)

    def recon_length(self) -> int:
        """Tokens kept of each paragraph to reconstruct now (see `schedule.recon_length`)."""
        return schedule.recon_length(self.cfg, self.step)

    def curriculum_progress(self) -> float:
        return schedule.curriculum_progress(self.cfg, self.step)

    def train_step(self) -> StepStats:
        cfg = self.cfg
        start, cpu_start = time.perf_counter(), time.process_time()
        self.build_seconds = 0.0
        self.tokenizer.train()
        ks, objectives, sums, counts, micro_means, penalties = [], [], [], [], [], []
        for micro in range(cfg.grad_accum):
            g = self.step * cfg.grad_accum + micro
            objective = self.objective_for(g)
            losses, micro_ks = self.micro_step(g, objective)
            sums.append(losses.nll.detach().sum())
            counts.append(losses.count.sum())
            micro_means.append(losses.mean().detach())
            if losses.penalty is not None:  # a micro-step with the contrast hinge
                penalties.append(losses.penalty_mean().detach())
            (losses.objective() / cfg.grad_accum).backward()
            ks += micro_ks
            objectives.append(objective)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[-1]["lr"]
        self.scheduler.step()
        self.step += 1
        # The step's numbers are read here, once: reading them after each backward made the
        # host wait for it on a GPU, instead of building the next micro-step's rows meanwhile.
        total, count = float(torch.stack(sums).sum()), int(torch.stack(counts).sum())
        by_objective: dict[str, list[float]] = {}
        for objective, mean in zip(objectives, torch.stack(micro_means).tolist(), strict=True):
            by_objective.setdefault(objective, []).append(mean)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        self.elapsed += seconds
        self.cpu_elapsed += cpu
        means = {name: sum(v) / len(v) for name, v in by_objective.items()}
        contrast = float(torch.stack(penalties).mean()) if penalties else None
        return StepStats(
            self.step,
            total / max(count, 1),
            lr,
            ks,
            count,
            seconds,
            cpu,
            self.build_seconds,
            means,
            contrast,
        )

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
            if closed := self.close_phase():
                emit(closed)
            stats = self.train_step()
            emit(
                self.log(
                    {
                        "step": stats.step,
                        "loss": stats.loss,
                        "objectives": stats.objective_losses,
                        **({} if stats.contrast is None else {"contrast": stats.contrast}),
                        "lr": stats.lr,
                        "k": stats.ks,
                        "tokens": stats.tokens,
                        "tokens_per_s": stats.tokens / stats.seconds,
                        "step_s": stats.seconds,
                        "cpu_s": stats.cpu_seconds,
                        "build_s": stats.build_seconds,
                        "elapsed_s": self.elapsed,
                        "cpu_elapsed_s": self.cpu_elapsed,
                    }
                )
            )
            last = self.finished(stop_at)
            self.probes(emit, force=last)
            if self.step % self.cfg.checkpoint_every == 0 or last:
                self.save_checkpoint()

    def close_phase(self) -> dict | None:
        """End the open phase (a share of the budget) once its share is spent; its length goes
        into the config, and with it into the checkpoint and the log (the record returned)."""
        self.cfg, closed = schedule.close_phase(self.cfg, self.step, self.budget_spent())
        if closed is None:
            return None
        phase = self.cfg.mix[closed]
        return self.log({"step": self.step, "phase_closed": closed, "phase_steps": phase.steps})

    def probes(self, emit: Callable[[dict], None], force: bool) -> None:
        """The content probe and the answer probe, each when due (or `force`d)."""
        cfg = self.cfg
        probes = (self.probe, self.answer_probe, self.recon_probe)
        periods = (cfg.probe_every, cfg.answer_probe_every, cfg.recon_probe_every)
        due = [
            (name, probe)
            for name, probe, every in zip(PROBES, probes, periods, strict=True)
            if probe is not None and (force or self.step % every == 0)
        ]
        for name, probe in due:
            start = time.perf_counter()
            try:
                with self.autocast(), evaluating(self.tokenizer):
                    result = probe.run(self.llm, self.tokenizer)
            except Exception as e:
                if cfg.probe_failure == "raise":
                    raise
                if isinstance(e, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()  # the card was full this time: try it next time
                else:
                    setattr(self, name, None)  # it would fail again at every later probe
                result = {"error": f"{type(e).__name__}: {e}"}
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
        budget = self.cfg.budget_s
        last = min(self.cfg.max_steps, stop_at or self.cfg.max_steps)
        return self.step >= last or (budget > 0 and self.budget_spent() >= budget)

    # -- log and checkpoints ----------------------------------------------------------------
    def log(self, record: dict) -> dict:
        return append_log(self.out_dir, record)

    def save_checkpoint(self) -> None:
        """Write the checkpoint whole, then swap it in (see `checkpoint.save_checkpoint`)."""
        state = {
            "step": self.step,
            "elapsed_s": self.elapsed,
            "cpu_elapsed_s": self.cpu_elapsed,
            "config": self.cfg.to_dict(),
        }
        save_checkpoint(self.out_dir, self.tokenizer, self.optimizer, self.scheduler, state)

    def resume(self) -> bool:
        """Continue from the run's checkpoint if there is one (then the log is cut to it)."""
        state = load_checkpoint(
            self.out_dir, self.tokenizer, self.llm, self.optimizer, self.scheduler
        )
        if state is None:
            return False
        self.step, self.elapsed = int(state["step"]), float(state["elapsed_s"])
        self.cpu_elapsed = float(state.get("cpu_elapsed_s", 0.0))
        self.cfg = schedule.with_saved_phases(self.cfg, state.get("config", {}).get("mix", []))
        self.truncate_log()
        return True

    def truncate_log(self) -> None:
        """Drop log records written after the checkpoint, so the curve continues cleanly."""
        truncate_log(self.out_dir, self.step)

    def export(self, path: Path) -> None:
        """The trained tokenizer alone (only what training changed), for `index` and `ask`."""
        self.tokenizer.save_pretrained(path, full=False)

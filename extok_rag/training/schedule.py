"""Everything that changes with the step, as pure functions of the config and the (micro-)step
index: the lr factor, what micro-step g draws (its packed sequences' order, its k, its
objective) and the reconstruction curriculum. A resumed run recomputes them exactly."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np

from extok_rag.config import MixPhase, TrainConfig


def lr_factor(cfg: TrainConfig, step: int, budget_spent: float) -> float:
    """Multiplier of each group's lr at `step`: linear warmup, then the schedule over the
    steps (or over the time budget, `budget_spent` seconds of it gone, when that is further
    along and `schedule_clock` is "budget")."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    if cfg.schedule_clock == "budget" and cfg.budget_s > 0:
        progress = max(progress, budget_spent / cfg.budget_s)
    if cfg.schedule == "linear":
        return max(0.0, 1.0 - progress)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


# -- phases set as a share of the time budget -------------------------------------------------
def close_phase(cfg: TrainConfig, step: int, budget_spent: float) -> tuple[TrainConfig, int | None]:
    """(`cfg`, index of the phase closed) before optimiser step `step`: the open phase in force
    there ends once its share of the budget is spent, its length becoming the steps it has run
    (at least one). Decided between steps on the restored clock, so a resumed run decides the
    same; (cfg, None) when nothing closes."""
    if not cfg.mix:
        return cfg, None
    i, start = cfg.phase_span(step)
    phase = cfg.mix[i]
    if not phase.open or budget_spent < phase.share * cfg.budget_s:
        return cfg, None
    mix = list(cfg.mix)
    mix[i] = replace(phase, steps=max(1, step - start))
    return replace(cfg, mix=tuple(mix)), i


def with_saved_phases(cfg: TrainConfig, saved_mix: list[dict]) -> TrainConfig:
    """`cfg` with each open phase's length as a checkpoint recorded it, where the checkpoint's
    phase at that place has the same weights and share (a run branched under another mix keeps
    its own)."""
    mix = list(cfg.mix)
    for i, phase in enumerate(mix):
        if phase.open and i < len(saved_mix):
            saved = MixPhase(**saved_mix[i])
            if (saved.weights, saved.share) == (phase.weights, phase.share) and saved.steps:
                mix[i] = saved
    return replace(cfg, mix=tuple(mix))


# -- draws of micro-step g ----------------------------------------------------------------------
def sequence_index(seed: int, g: int, n: int) -> int:
    """The g-th of `n` packed sequences seen by the run: a seeded permutation per epoch."""
    perm = np.random.default_rng([seed, g // n]).permutation(n)
    return int(perm[g % n])


def k_for(cfg: TrainConfig, g: int) -> int:
    """The down-scaling factor of the g-th packed sequence."""
    return random.Random(cfg.seed * 1_000_003 + g).choice(cfg.k_choices)


def objective_for(cfg: TrainConfig, g: int) -> str:
    """The objective of micro-step g, drawn with the weights of its step's phase."""
    phase = cfg.phase_at(g // cfg.grad_accum)
    names = sorted(phase.weights)
    rng = random.Random(f"objective:{cfg.seed}:{g}")
    return rng.choices(names, [phase.weights[n] for n in names])[0]


# -- reconstruction curriculum ------------------------------------------------------------------
def curriculum_progress(cfg: TrainConfig, step: int) -> float:
    return min(1.0, step / max(1, cfg.recon_curriculum_steps))


def recon_chunks(cfg: TrainConfig, step: int) -> int:
    """Paragraphs per reconstruction row at `step`: first -> last over the curriculum steps."""
    first, last = cfg.recon_chunks
    return round(first + (last - first) * curriculum_progress(cfg, step))


def recon_length(cfg: TrainConfig, step: int) -> int:
    """Tokens kept of each paragraph to reconstruct at `step`: recon_len_start -> recon_len
    over the curriculum steps (REFRAG's lesson: reconstruction learns short before long)."""
    if not cfg.recon_len_start:
        return cfg.recon_len
    return round(
        cfg.recon_len_start + (cfg.recon_len - cfg.recon_len_start) * curriculum_progress(cfg, step)
    )

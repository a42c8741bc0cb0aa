"""What one micro-step trains on, and its losses: `seq_batch` packed sequences (ar,
chunk_reconstruction) or `frame_rows` frame examples (qa / span / reconstruction / expand /
distill), each at its own k. Every draw is seeded by (seed, micro-step index g)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from extok_rag.config import CONTRAST_OBJECTIVES, QA_OBJECTIVES, TrainConfig
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import Row
from extok_rag.training.frame import (
    FrameData,
    FrameExample,
    bare_rows,
    compressed_rows,
    expand_rows,
    qa_example,
    raw_rows,
    reconstruction_example,
    rotated,
    span_example,
    truncate_text,
)
from extok_rag.training.objective import (
    ChunkLosses,
    ar_rows,
    contrast_losses,
    distill_losses,
    encode_sequences,
    reconstruction_rows,
    row_losses,
)
from extok_rag.training.schedule import k_for, recon_chunks, recon_length, sequence_index


class Sequences(Protocol):
    """Packed token sequences: `len()` and `[i]` -> (seq_len,) integer array."""

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> np.ndarray: ...


def chunks_of(data: Sequences, indices: Iterable[int], cfg: TrainConfig) -> torch.Tensor:
    """Sequences `indices` of `data`, each cut into its chunks: (N, C, L)."""
    C, L = cfg.chunks_per_sequence, cfg.chunk_len
    rows = [torch.as_tensor(np.asarray(data[i][: C * L], dtype=np.int64)) for i in indices]
    return torch.stack(rows).view(len(rows), C, L)


def sequence_losses(
    llm: FrozenLLM,
    tokenizer: ExtensibleTokenizer,
    cfg: TrainConfig,
    data: Sequences,
    g: int,
    objective: str,
) -> tuple[ChunkLosses, list[int]]:
    """ar / chunk_reconstruction on `seq_batch` packed sequences (the g-th micro-step's),
    each at its own k: one batched encode, one batched LLM call."""
    n = cfg.seq_batch
    draws = range(g * n, (g + 1) * n)  # seq_batch 1: sequence g at k_for(g), as before
    chunks = chunks_of(data, [sequence_index(cfg.seed, i, len(data)) for i in draws], cfg)
    ks = [k_for(cfg, i) for i in draws]
    embeds = encode_sequences(tokenizer, chunks, ks, cfg.downscale)  # N x C x (ceil(L/k), d)
    build = reconstruction_rows if objective == "chunk_reconstruction" else ar_rows
    rows = [
        row
        for seq, seq_embeds in zip(chunks, embeds, strict=True)
        for row in build(seq, seq_embeds, cfg.loss_first_tokens)
    ]
    return row_losses(llm, rows), ks


def frame_examples(
    llm: FrozenLLM,
    frame: FrameData,
    cfg: TrainConfig,
    objective: str,
    rng: random.Random,
    n: int,
    step: int,
) -> list[FrameExample]:
    """`n` examples of a frame objective (fewer for span when paragraphs lack a usable
    sentence); reconstruction follows the curriculum at `step`."""
    if objective in QA_OBJECTIVES:
        if not frame.qa:
            raise ValueError(f"objective {objective!r} needs QA pairs (qa_train.jsonl)")
        return [qa_example(p, rng, cfg.qa_distractors) for p in rng.choices(frame.qa, k=n)]
    if not frame.paragraphs:
        raise ValueError(f"objective {objective!r} needs paragraphs_train.jsonl")
    if objective == "reconstruction":
        m, length = recon_chunks(cfg, step), recon_length(cfg, step)
        return [
            reconstruction_example(
                [truncate_text(llm, p, length) for p in rng.sample(frame.paragraphs, m)]
            )
            for _ in range(n)
        ]
    examples: list[FrameExample] = []
    for _ in range(20 * n):  # span: paragraphs without a usable sentence are skipped
        text = truncate_text(llm, rng.choice(frame.paragraphs), cfg.context_len)
        example = span_example(text, rng)
        if example is not None:
            examples.append(example)
        if len(examples) == n:
            break
    return examples


@dataclass(frozen=True)
class FrameRows:
    """A micro-step's frame rows, built on the host: the rows scored (`rows`), the teacher's
    for distill (the same examples read raw), the contrast rows (each question over another
    example's paragraphs, and with none), and each example's k."""

    rows: list[Row]
    teacher: list[Row] | None
    ks: list[int]
    other: list[Row] | None = None
    bare: list[Row] | None = None


def frame_rows(
    llm: FrozenLLM,
    tokenizer: ExtensibleTokenizer,
    cfg: TrainConfig,
    examples: list[FrameExample],
    rng: random.Random,
    objective: str,
) -> FrameRows:
    """The rows of a batch of frame `examples`, each at its own k drawn from `rng`. A
    contrast row reads its question's k (and share) over the next example's paragraphs;
    it draws nothing, so the scored rows are the same with or without it."""
    ks = [cfg.frame_k(objective, rng.choice(cfg.k_choices)) for _ in examples]
    max_tokens = cfg.recon_len if objective == "reconstruction" else cfg.context_len
    contrast = cfg.contrast_weight > 0 and objective in CONTRAST_OBJECTIVES
    reads = 2 if contrast else 1  # each example as drawn, then (contrast) over the next's
    read = examples + rotated(examples) if contrast else examples
    teacher = raw_rows(llm, examples, max_tokens) if objective == "distill" else None
    if objective == "expand":
        shares = [rng.uniform(*cfg.expand_share) for _ in examples]
        rows = expand_rows(
            llm, tokenizer, read, ks * reads, shares * reads, max_tokens, cfg.downscale
        )
    else:
        rows = compressed_rows(llm, tokenizer, read, ks * reads, max_tokens, cfg.downscale)
    if not contrast:
        return FrameRows(rows, teacher, ks)
    n = len(examples)
    return FrameRows(rows[:n], teacher, ks, other=rows[n:], bare=bare_rows(llm, examples))


def frame_rows_losses(llm: FrozenLLM, cfg: TrainConfig, batch: FrameRows) -> ChunkLosses:
    if batch.teacher is not None:
        return distill_losses(llm, batch.rows, batch.teacher, cfg.distill_temperature)
    if batch.other is not None and batch.bare is not None:
        return contrast_losses(llm, batch.rows, batch.other, batch.bare, cfg.contrast_weight)
    return row_losses(llm, batch.rows)

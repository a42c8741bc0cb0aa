"""A run's JSONL log and its checkpoint: the tokenizer's trained weights, optimizer and
scheduler state and the step counters, swapped in whole so that a kill at any moment leaves
one complete checkpoint, and a resumed run cuts the log back to it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from extok_rag.config import write_json
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM

CHECKPOINT, LOG = "checkpoint", "log.jsonl"
OPTIMIZER_FILE, STATE_FILE = "optimizer.pt", "trainer_state.json"


def append_log(out_dir: Path, record: dict) -> dict:
    """Append `record` as one line of the run's log; return it."""
    with (out_dir / LOG).open("a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def truncate_log(out_dir: Path, step: int) -> None:
    """Drop log records written after `step` (the checkpoint's), so the curve continues
    cleanly."""
    log = out_dir / LOG
    if not log.exists():
        return
    keep = [
        line
        for line in log.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= step
    ]
    log.write_text("".join(line + "\n" for line in keep))


def save_checkpoint(
    out_dir: Path,
    tokenizer: ExtensibleTokenizer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict,
) -> None:
    """Write checkpoint.tmp fully, then swap it in: a kill at any moment leaves one whole
    checkpoint (the old one, or the new one). `state`: the trainer's counters and config."""
    final, tmp, old = (out_dir / n for n in (CHECKPOINT, CHECKPOINT + ".tmp", CHECKPOINT + ".old"))
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp, full=False)
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        tmp / OPTIMIZER_FILE,
    )
    write_json(tmp / STATE_FILE, state)
    if final.exists():
        final.replace(old)
    tmp.replace(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    out_dir: Path,
    tokenizer: ExtensibleTokenizer,
    llm: FrozenLLM,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict | None:
    """Load the run's checkpoint (if there is one) into the tokenizer, optimizer and
    scheduler; return its saved state, None when there is none."""
    path = out_dir / CHECKPOINT
    if not path.exists() and (out_dir / (CHECKPOINT + ".old")).exists():
        (out_dir / (CHECKPOINT + ".old")).replace(path)  # killed mid-swap
    if not path.exists():
        return None
    tokenizer.load_weights(path, llm)
    saved = torch.load(path / OPTIMIZER_FILE, weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return json.loads((path / STATE_FILE).read_text())

"""`extok-rag train`: training of the extensible tokenizer (a mixture of objectives), resumable.

Settings are a `TrainConfig`: defaults, then a JSON file (`--config`), then `--set key=value`
overrides (nested keys with dots: `--set tokenizer.num_layers=4`). A run lives in its out dir
(`<home>/runs/<name>` by default): rerunning the same command resumes it from its checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from extok_rag.cli.console import err_console, reports_errors
from extok_rag.errors import ExtokError


@reports_errors
def train(
    config: Annotated[
        list[Path] | None, typer.Option(help="TrainConfig JSON; repeat to layer files.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override: key=value (JSON value or plain string)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Run name (out dir <home>/runs/NAME).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimiser steps in total.")] = None,
    stop_at: Annotated[
        int | None,
        typer.Option(min=1, help="Stop at this step (schedule still set by max steps)."),
    ] = None,
    export: Annotated[Path | None, typer.Option(help="Write the trained tokenizer here.")] = None,
    llm: Annotated[
        str | None, typer.Option(help="HF causal-LM directory (default SmolLM2).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Train an extensible tokenizer for the frozen LLM (resumes an existing run)."""
    import torch

    from extok_rag.cli.console import load_llm
    from extok_rag.config import RuntimeConfig, home_dir
    from extok_rag.training.shards import PackedSequences
    from extok_rag.training.trainer import Trainer

    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(config or [], set_ or [], name=name, max_steps=max_steps)
    data_dir = Path(cfg.data_dir) if cfg.data_dir else home_dir() / "training-data"
    out_dir = Path(cfg.out_dir) if cfg.out_dir else home_dir() / "runs" / cfg.name
    train_data, val_data = (
        open_shard(data_dir / f, cfg.seq_len, PackedSequences) for f in ("train.bin", "val.bin")
    )
    frame, probe_items = load_frame_data(cfg, data_dir)
    device = RuntimeConfig().resolve_device()
    frozen = load_llm(llm, RuntimeConfig(device=device, dtype=cfg.resolved_dtype(device)))
    with err_console.status("preparing the tokenizer"):
        trainer = Trainer(cfg, frozen, train_data, val_data, out_dir, frame, probe_items)
    err_console.print(
        f"run {out_dir} — step {trainer.step}/{cfg.max_steps}, {trainer.dtype}, objectives "
        f"{', '.join(sorted(cfg.objectives()))}; {len(train_data):,} packed sequences, "
        f"{len(frame.qa):,} QA pairs, {len(frame.paragraphs):,} paragraphs"
    )
    with TrainProgress(cfg.max_steps, trainer.step) as progress:
        trainer.run(progress.update, stop_at=stop_at)
    if export:
        trainer.export(export)
        err_console.print(f"tokenizer written to {export}")


def load_frame_data(cfg, data_dir: Path):
    """QA pairs / paragraphs for the frame objectives the config uses, and the held-out items
    of the answer and reconstruction probes (when either runs)."""
    from extok_rag.config import QA_OBJECTIVES
    from extok_rag.datasets.training_files import ANSWER_PROBE_FILE, read_qa_examples
    from extok_rag.training.frame import FrameData

    used = cfg.objectives()
    frame = FrameData.load(
        data_dir,
        need_qa=bool(used & set(QA_OBJECTIVES)),
        need_paragraphs=bool(used & {"span", "reconstruction"}),
    )
    probing = cfg.answer_probe_every or cfg.recon_probe_every  # both read the held-out items
    probe = read_qa_examples(data_dir / ANSWER_PROBE_FILE) if probing else None
    return frame, probe


def load_config(paths: list[Path], overrides: list[str], **fields):
    """Defaults, then each JSON file in order, then `key=value` overrides, then `fields`."""
    from extok_rag.config import TrainConfig

    data = TrainConfig().to_dict()
    for path in paths:
        if not path.is_file():
            raise ExtokError(f"config file {path} does not exist")
        merge(data, json.loads(path.read_text()))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ExtokError(f"--set {item!r}: expected key=value")
        merge(data, nested(key.split("."), parse_value(value)))
    merge(data, {k: v for k, v in fields.items() if v is not None})
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ExtokError(f"bad training config: {err}") from err


def parse_value(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def nested(keys: list[str], value) -> dict:
    return {keys[0]: nested(keys[1:], value) if len(keys) > 1 else value}


def merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value


def open_shard(path: Path, seq_len: int, cls):
    if not path.is_file():
        raise ExtokError(f"{path} does not exist: run `extok-rag data prepare` first")
    return cls(path, seq_len)


class TrainProgress:
    """A rich progress bar (loss, tokens/s, ETA) plus one line per content probe."""

    def __init__(self, total: int, done: int):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  {task.fields[tps]:,.0f} tok/s"),
            TimeRemainingColumn(),
            console=err_console,
        )
        self.task = self.progress.add_task("train", total=total, completed=done, loss=0.0, tps=0)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, event: dict) -> None:
        for name in ("probe", "answer_probe"):
            if name in event:
                rows = "  ".join(f"{k} {v:.3f}" for k, v in event[name].items())
                self.progress.console.print(f"{name} @ step {event['step']}: {rows}")
        if "loss" in event:
            self.progress.update(
                self.task, completed=event["step"], loss=event["loss"], tps=event["tokens_per_s"]
            )

"""`extok-rag data prepare`: training text from Debian packages and HotpotQA's training split,
tokenized and packed into fixed-length sequences, and the JSON-lines files of the frame
objectives (see `extok_rag.training.data`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from extok_rag.cli.console import err_console, out_console, reports_errors

data_app = typer.Typer(
    name="data",
    help="Prepare training data (source packages -> token shards and JSON-lines files).",
    no_args_is_help=True,
)


@data_app.callback()
def data() -> None:
    """Prepare training data (source packages -> token shards and JSON-lines files)."""
    # A callback keeps `data` a command group even while it has a single command.


class _RichProgress:
    """`ProgressSink` over one rich progress bar, relabelled at each stage."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=None)

    def begin(self, label: str, total: int | None) -> None:
        self.progress.reset(self.task, description=label, total=total, completed=0)

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)


@data_app.command()
@reports_errors
def prepare(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data dir (default $EXTOK_RAG_HOME or ~/.cache/extok-rag)."),
    ] = None,
    max_chars: Annotated[
        int | None,
        typer.Option(min=1, help="Total clean characters (default: each source's own cap)."),
    ] = None,
    sources: Annotated[
        str | None, typer.Option(help="Comma-separated source names (default: all).")
    ] = None,
    seq_len: Annotated[int, typer.Option(min=2, help="Tokens per packed sequence.")] = 1024,
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of documents held out.")
    ] = 0.02,
    seed: Annotated[int, typer.Option(help="Seed for sampling, split and order.")] = 0,
    card: Annotated[
        Path | None, typer.Option(help="Also write a Markdown data card to this path.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the shards are current.")] = False,
) -> None:
    """Download, clean, dedupe, tokenize and pack the training text; write the QA, probe and
    paragraph files (idempotent)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from extok_rag.cli.console import quiet_transformers
    from extok_rag.training.card import render_data_card
    from extok_rag.training.data import DataSettings, prepare_training_data, training_data_dir

    quiet_transformers()
    names = tuple(n.strip() for n in sources.split(",") if n.strip()) if sources else ()
    settings = DataSettings(names, max_chars, seq_len, val_fraction, seed)
    settings.resolved_sources()  # fail fast on unknown names
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        sink = _RichProgress(progress)
        meta = prepare_training_data(settings, data_dir, progress=sink, force=force)
    out_console.print(summary_table(meta))
    out_console.print(files_line(meta), highlight=False)
    where = training_data_dir(data_dir)
    state = "already prepared, reused" if meta["reused"] else f"built in {meta['seconds']} s"
    err_console.print(f"{where}: {state}", highlight=False)
    if card is not None:
        card.write_text(render_data_card(meta))
        err_console.print(f"data card written to {card}", highlight=False)


def summary_table(meta: dict) -> Table:
    table = Table(title="training data")
    for column in ("source", "package", "version", "docs", "paragraphs", "chars", "tokens"):
        table.add_column(column, justify="left" if column in ("source", "package") else "right")
    for s in meta["sources"]:
        table.add_row(
            s["name"],
            s["package"],
            s["version"],
            f"{s['documents']:,}",
            f"{s['paragraphs_kept']:,}",
            f"{s['chars']:,}",
            f"{s['tokens']:,}",
        )
    for split in ("train", "val"):
        m = meta[split]
        table.add_row(
            f"[bold]{split}[/bold]",
            m["file"],
            "",
            f"{m['documents']:,}",
            "",
            f"{m['chars']:,}",
            f"{m['tokens']:,} ({m['sequences']:,} x {meta['settings']['seq_len']})",
        )
    return table


def files_line(meta: dict) -> str:
    """One line on the JSON-lines files: passages, QA and probe questions."""
    paragraphs = meta["paragraphs_train"]
    parts = [f"{paragraphs['file']}: {paragraphs['paragraphs']:,} passages"]
    for key in ("qa_train", "answer_probe"):
        if meta.get(key):
            parts.append(f"{meta[key]['file']}: {meta[key]['questions']:,} questions")
    return "; ".join(parts)

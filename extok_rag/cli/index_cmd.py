"""`extok-rag index CORPUS` builds or updates an index; `extok-rag info [INDEX]` describes one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from extok_rag.cli.console import (
    err_console,
    human_bytes,
    load_llm,
    out_console,
    reports_errors,
)
from extok_rag.indexes import resolve_index_dir


@reports_errors
def index(
    corpus: Annotated[Path, typer.Argument(help="Folder of .txt/.md/.rst/.html/.pdf files.")],
    index_path: Annotated[
        Path | None,
        typer.Option("--index", help="Index folder (default ./indexes/<name>)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Index name (default: the corpus folder's name).")
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option(help="Only files matching this glob (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Skip files matching this glob (repeatable).")
    ] = None,
    llm: Annotated[
        str | None, typer.Option(help="HF causal-LM directory (default SmolLM2).")
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Extensible-tokenizer checkpoint, or 'untrained' (default: the shipped one)."
        ),
    ] = None,
    embedder: Annotated[
        Path | None, typer.Option(help="Retrieval embedder directory (default all-MiniLM-L6-v2).")
    ] = None,
    chunk_tokens: Annotated[
        int | None, typer.Option(min=8, help="LLM tokens per chunk (default 256, or the index's).")
    ] = None,
    stride: Annotated[
        int | None, typer.Option(min=1, help="Base stride of stored states (default 2).")
    ] = None,
    states: Annotated[
        str | None,
        typer.Option(
            "--states",
            help="State encoding of a new index: int8 (default; a float16 scale per state, "
            "about half the disk) or float16. An existing index keeps its own.",
        ),
    ] = None,
    splitter: Annotated[
        str | None, typer.Option(help="tokens (fast, default) or sentence (LlamaIndex).")
    ] = None,
    batch_tokens: Annotated[int, typer.Option(min=256, help="Padded tokens per batch.")] = 16_384,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    rebuild: Annotated[bool, typer.Option(help="Rebuild from scratch (other models).")] = False,
    dry_run: Annotated[bool, typer.Option(help="Show what would change; write nothing.")] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="local (this process) or ray (Ray Data: reading as tasks, encoding on one "
            "actor per GPU or on CPU actors; needs the ray extra; docs/scaling.md)."
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster address (HOST:PORT or auto); default a local instance."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Ray encoder actors (CPU; at most one per GPU); a local instance's CPUs."
        ),
    ] = None,
) -> None:
    """Index CORPUS: chunks, retrieval vectors and extensible embeddings, incrementally."""
    from extok_rag.indexing import IndexRequest, prepare_run

    try:
        request = IndexRequest(
            corpus,
            index_path=index_path,
            name=name,
            include=tuple(include or ()),
            exclude=tuple(exclude or ()),
            llm=llm,
            tokenizer=tokenizer,
            embedder=embedder,
            chunk_tokens=chunk_tokens,
            stride=stride,
            states=states,
            splitter=splitter,
            batch_tokens=batch_tokens,
            device=device,
            rebuild=rebuild,
            dry_run=dry_run,
            engine=engine,
            address=address,
            workers=workers,
        )
    except ValueError as exc:  # options that cannot be, named in the message
        raise typer.BadParameter(str(exc)) from None
    run = prepare_run(request, load_llm=load_llm, note=print_note)
    with RichProgress() as progress:
        report = run(progress)
    print_report(report)


@reports_errors
def info(
    index_path: Annotated[
        Path | None,
        typer.Argument(metavar="[INDEX]", help="Index folder or name under ./indexes/."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Show an index's manifest and counts."""
    from extok_rag.indexes import open_index

    index_dir = resolve_index_dir(index_path)
    facts = index_facts(index_dir, open_index(index_dir, notice=print_notice))
    if as_json:
        import json

        typer.echo(json.dumps(facts, indent=2))
        return
    print_facts(index_dir, facts)


def index_facts(index_dir: Path, snapshot) -> dict:
    """What `info` shows, as plain JSON values (the committed snapshot's)."""
    from extok_rag.indexes import disk_bytes

    m = snapshot.manifest
    on_disk = disk_bytes(index_dir)
    tokens = m.counts.tokens
    stored = snapshot.table.data_bytes() + (index_dir / m.vector_file).stat().st_size
    n_states = int((-(-snapshot.table.token_counts() // m.stride)).sum())  # ceil(n / stride)
    state_bytes = n_states * snapshot.table.bytes_per_state
    return {
        "index": str(index_dir),
        "llm": m.llm.to_dict(),
        "tokenizer": m.tokenizer.to_dict(),
        "embedder": m.embedder,
        "stride": m.stride,
        "downscale": m.downscale,
        "chunking": m.chunking,
        "documents": m.counts.documents,
        "chunks": m.counts.chunks,
        "table_rows": snapshot.table.count(),
        "tokens": m.counts.tokens,
        "vector_index": {"kind": snapshot.vectors.kind, "vectors": len(snapshot.vectors)},
        "table_version": m.table_version,
        "vector_file": m.vector_file,
        "state_encoding": m.state_encoding,
        "bytes_on_disk": on_disk,  # the folder: also the previous commit's files
        "bytes_per_token": round(stored / tokens, 1) if tokens else None,  # this commit's
        "state_bytes_per_token": round(state_bytes / tokens, 1) if tokens else None,
        "created": m.created,
        "updated": m.updated,
        "format_version": m.format_version,
    }


def print_facts(index_dir: Path, facts: dict) -> None:
    from rich.table import Table

    from extok_rag.config import ModelIdentity

    table = Table(title=f"index {index_dir}", show_header=False)
    vectors = facts["vector_index"]
    per_token = facts["bytes_per_token"]
    rows = [
        ("LLM", ModelIdentity(**facts["llm"]).describe()),
        ("extensible tokenizer", ModelIdentity(**facts["tokenizer"]).describe()),
        ("embedder", facts["embedder"]),
        ("stride", f"{facts['stride']} ({facts['downscale']} down-scaling)"),
        ("chunking", ", ".join(f"{k}={v}" for k, v in sorted(facts["chunking"].items()))),
        ("documents", f"{facts['documents']:,}"),
        ("chunks", f"{facts['chunks']:,} (table: {facts['table_rows']:,})"),
        ("tokens", f"{facts['tokens']:,}"),
        ("vector index", f"{vectors['kind']}, {vectors['vectors']:,} vectors"),
        ("table version", str(facts["table_version"])),
        ("state encoding", facts["state_encoding"]),
        ("bytes on disk", human_bytes(facts["bytes_on_disk"])),
        ("bytes per token", "-" if per_token is None else per_token_text(facts)),
        ("created / updated", f"{facts['created']} / {facts['updated']}"),
        ("format version", str(facts["format_version"])),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out_console.print(table)


def per_token_text(facts: dict) -> str:
    states = facts["state_bytes_per_token"]
    return f"{facts['bytes_per_token']:,.1f} (table + vectors; states alone {states:,.1f})"


def print_note(message: str) -> None:
    """One "note:" line on stderr (e.g. states from an untrained extensible tokenizer)."""
    err_console.print(f"[yellow]note:[/yellow] {message}")


def print_notice(message: str) -> None:
    """One notice line on stderr (e.g. a vector file rebuilt from the table)."""
    err_console.print(message, highlight=False, soft_wrap=True, markup=False)


class RichProgress:
    """IndexProgress drawn as rich bars on stderr: files (by bytes, with ETA), chunks, tokens/s."""

    def __enter__(self):
        import time

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._time = time.perf_counter
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self._progress.__enter__()
        self._files = self._progress.add_task("files", total=None, detail="")
        self._bytes = self._progress.add_task("bytes", total=None, detail="", visible=False)
        self._chunks = self._progress.add_task("chunks", total=None, detail="")
        self._tokens = 0
        self._started = self._time()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def warn(self, message: str) -> None:
        self._progress.console.print(
            f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True
        )

    def status(self, message: str) -> None:
        self._progress.update(self._chunks, detail=message)

    def start(self, plan) -> None:
        self._progress.update(self._files, total=len(plan.to_index))
        self._progress.update(self._bytes, total=sum(f.size for f in plan.to_index))
        self._started = self._time()

    def advance(self, files: int, bytes_read: int, chunks: int, tokens: int) -> None:
        self._tokens += tokens
        rate = self._tokens / max(self._time() - self._started, 1e-9)
        self._progress.advance(self._files, files)
        self._progress.advance(self._bytes, bytes_read)
        self._progress.advance(self._chunks, chunks)
        self._progress.update(self._chunks, detail=f"{self._tokens:,} tokens, {rate:,.0f} tokens/s")


def print_report(report) -> None:
    from rich.table import Table

    plan = report.plan
    verb = "would index" if report.dry_run else "indexed"
    if report.up_to_date:
        err_console.print(
            f"index {report.index_dir} is up to date: no model work done", soft_wrap=True
        )
    table = Table(title=f"{report.index_dir}{' (dry run)' if report.dry_run else ''}")
    for column in ("", "documents", "chunks", "tokens"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row(
        f"{verb} (new {len(plan.added)}, changed {len(plan.changed)})",
        f"{len(plan.to_index):,}",
        f"{report.chunks_written:,}",
        f"{report.tokens_written:,}",
    )
    table.add_row("removed", f"{len(plan.deleted):,}", "", "")
    table.add_row("unchanged", f"{len(plan.unchanged):,}", "", "")
    table.add_row("skipped (warned)", f"{len(report.skipped):,}", "", "")
    if not report.dry_run:
        c = report.counts
        table.add_row("index total", f"{c.documents:,}", f"{c.chunks:,}", f"{c.tokens:,}")
    table.caption = f"{human_bytes(report.bytes_on_disk)} on disk, {report.seconds:.1f} s" + (
        f", table version {report.table_version}" if report.table_version is not None else ""
    )
    err_console.print(table)

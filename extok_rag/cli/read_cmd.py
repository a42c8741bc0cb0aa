"""`extok-rag read`: the paper's online mode. Files read in sessions into the frozen LLM's KV
cache, each session condensed by the extensible tokenizer at k once read (`ask.online`), then
a question answered over all of it, streamed to stdout; no `--ask`: an interactive loop over
the same read state. Bad input is refused in one line before any model loads."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from extok_rag.cli.ask_cmd import (
    DeviceOption,
    DtypeOption,
    LlmOption,
    RepeatStopOption,
    parse_k,
    read_question,
)
from extok_rag.cli.console import err_console, reports_errors
from extok_rag.errors import ExtokError


@reports_errors
def read(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Files read in order, as `index` reads them (.txt .md .rst .html .pdf; "
            "other names as UTF-8 text)."
        ),
    ],
    question: Annotated[
        str | None, typer.Option("--ask", help="The question (none: interactive).")
    ] = None,
    k: Annotated[
        str,
        typer.Option(
            help="Down-scaling factor of read sessions (2, 4, 8, 16, 32), or 'auto': the "
            "smallest that keeps everything read in the LLM window."
        ),
    ] = "auto",
    session_tokens: Annotated[
        int, typer.Option(min=16, help="Raw tokens per session, each condensed as one chunk.")
    ] = 512,
    tokenizer: Annotated[Path | None, typer.Option(help="Extensible-tokenizer checkpoint.")] = None,
    llm: LlmOption = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    repeat_stop: RepeatStopOption = 8,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
) -> None:
    """Read FILES in sessions, each condensed into extensible embeddings, then answer."""
    from extok_rag.ask.context import load_tokenizer
    from extok_rag.ask.online import OnlineConfig, OnlineReader, online_ks
    from extok_rag.cli.console import load_llm
    from extok_rag.cli.generate_cmd import warn
    from extok_rag.config import GenerationConfig, RuntimeConfig

    fixed_k = parse_k(k)
    online_ks(fixed_k)  # refused before anything loads
    text = read_files(files)
    cfg = OnlineConfig(session_tokens=session_tokens, k=fixed_k, answer_tokens=max_new_tokens)
    runtime = RuntimeConfig(device=device, dtype=dtype)  # type: ignore[arg-type]
    frozen = load_llm(llm, runtime, decodes_long=True)
    condenser = load_tokenizer(frozen, tokenizer, notice=warn)
    ids = frozen.tokenize(text)
    reader = OnlineReader.for_tokens(frozen, condenser, len(ids), cfg)
    read_with_progress(reader, ids)
    err_console.print(
        f"[dim]read {reader.tokens_read} tokens in {reader.sessions} sessions at "
        f"k={reader.k} ({'auto' if fixed_k is None else 'fixed'}): the history takes "
        f"{reader.history_positions} of the LLM's {frozen.max_positions} positions[/dim]",
        highlight=False,
    )
    gen = GenerationConfig(max_new_tokens, temperature, repeat_stop=repeat_stop)
    if question is not None:
        answer_one(reader, question, gen)
        return
    err_console.print("[dim]interactive: empty line or Ctrl-D to quit[/dim]")
    while (line := read_question()) is not None:
        answer_one(reader, line, gen)


def read_files(paths: Sequence[Path]) -> str:
    """The files' texts, in order, one blank line between them; one line for a file that is
    missing, empty or not text."""
    return "\n\n".join(read_file(path) for path in paths)


def read_file(path: Path) -> str:
    from extok_rag.indexing.reading import (
        SUFFIXES,
        SourceFile,
        UnreadableFile,
        decode_text,
        read_text,
    )

    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ExtokError(f"{path} {what}")
    try:
        if path.suffix.lower() in SUFFIXES:
            text = read_text(SourceFile(path, path.name, "", path.stat().st_size))
        else:  # any other name: UTF-8 text, as `index` reads .txt
            text = decode_text(path.read_bytes())
    except (UnreadableFile, OSError) as err:
        raise ExtokError(f"cannot read {path}: {err}") from None
    if not text.strip():
        raise ExtokError(f"cannot read {path}: no text in it")
    return text


def read_with_progress(reader, ids) -> None:
    """Read ids (n,) with a progress bar on stderr, in tokens read."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("reading"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tokens"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task("read", total=len(ids))
        reader.read(ids, on_session=lambda session: progress.advance(task, session.tokens))


def answer_one(reader, question: str, gen) -> None:
    for piece in reader.ask(question, gen):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")

"""`extok-rag chat`: a conversation whose earlier turns are read whole, and condensed into
extensible embeddings instead of dropped once they outgrow the window (`ask.conversation`);
with `--index`, each message is also answered from that index as `ask` answers it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from extok_rag.cli.ask_cmd import (
    DEFAULT_MODE_OPTION,
    DEFAULT_RETRIEVAL,
    MODE_HELP,
    DeviceOption,
    DtypeOption,
    LlmOption,
    Mode,
    RepeatStopOption,
    Retrieval,
    check_k_option,
    read_question,
)
from extok_rag.cli.console import err_console, reports_errors
from extok_rag.config import RETRIEVAL_HELP, AskConfig
from extok_rag.errors import ExtokError


@reports_errors
def chat(
    index: Annotated[
        Path | None,
        typer.Option(help="Answer each message from this index too (none: the LLM alone)."),
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
    top_n: Annotated[int, typer.Option(min=1, help="Chunks to retrieve (--index).")] = 4,
    mode: Annotated[Mode, typer.Option(help=MODE_HELP)] = DEFAULT_MODE_OPTION,
    retrieval: Annotated[
        Retrieval,
        typer.Option(help=RETRIEVAL_HELP + "."),
    ] = DEFAULT_RETRIEVAL,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="Extensible-tokenizer checkpoint that condenses old turns."),
    ] = None,
    llm: LlmOption = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    repeat_stop: RepeatStopOption = 8,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
) -> None:
    """Chat; earlier turns are condensed instead of dropped when they outgrow the window."""
    from extok_rag.ask.context import load_tokenizer
    from extok_rag.ask.conversation import Chat, Condenser
    from extok_rag.cli.console import load_llm
    from extok_rag.cli.generate_cmd import warn
    from extok_rag.cli.index_cmd import print_notice
    from extok_rag.config import GenerationConfig, RuntimeConfig

    cfg = AskConfig(
        top_n=top_n,
        k=check_k_option(mode.value, None),
        mode=mode.value,
        retrieval=retrieval.value,
    )
    gen = GenerationConfig(max_new_tokens, temperature, repeat_stop=repeat_stop)
    snapshot = embedder = None
    if index is not None:
        from extok_rag.indexes import open_index, resolve_index_dir

        snapshot = open_index(resolve_index_dir(index), notice=print_notice)
    runtime = RuntimeConfig(device=device, dtype=dtype)  # type: ignore[arg-type]
    frozen = load_llm(llm, runtime, decodes_long=True)
    if snapshot is not None:
        from extok_rag.ask.retrieval import check_models
        from extok_rag.models.embedder import Embedder

        embedder = Embedder.load(None, runtime)
        check_models(snapshot, frozen, embedder)
    condenser = Condenser(lambda: load_tokenizer(frozen, tokenizer, notice=warn))
    conversation = Chat(frozen, condenser, cfg, gen, snapshot, embedder, system)
    err_console.print("[dim]chat: empty line or Ctrl-D to quit[/dim]")
    while (line := read_question("> ")) is not None:
        try:
            _, _, history, pieces = conversation.say(line)
        except ExtokError as err:  # one message refused (e.g. too long): the chat goes on
            err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
            continue
        if history.condensed_turns:
            err_console.print(
                f"[dim]the {history.condensed_turns} oldest of {history.turns} earlier turns "
                f"({history.condensed_tokens} tokens) read condensed at k={history.k}[/dim]",
                highlight=False,
            )
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")

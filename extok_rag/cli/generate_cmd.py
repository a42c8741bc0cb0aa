"""`extok-rag generate`: one prompt to the frozen LLM, optionally with a context file read in
any of `ask`'s modes and in `ask`'s frame: its chunks raw, compressed into extensible
embeddings, its best sentences raw, or not at all (to compare them)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from extok_rag.cli.ask_cmd import (
    DEFAULT_MODE_OPTION,
    DEFAULT_SCORER,
    MODE_HELP,
    DeviceOption,
    DtypeOption,
    LlmOption,
    Mode,
    Scorer,
    check_k_option,
    parse_budget,
    parse_k,
)
from extok_rag.cli.console import err_console, reports_errors
from extok_rag.errors import ExtokError


@reports_errors
def generate(
    prompt: Annotated[str, typer.Argument(help="The question or instruction.")],
    context: Annotated[Path | None, typer.Option(help="A text file to answer from.")] = None,
    mode: Annotated[Mode, typer.Option(help=MODE_HELP)] = DEFAULT_MODE_OPTION,
    k: Annotated[
        str, typer.Option(help="Down-scaling factor, or 'auto' (smallest that fits).")
    ] = "auto",
    budget: Annotated[
        str, typer.Option(help="Budget modes: prompt positions, or 'auto' (window less answer).")
    ] = "auto",
    scorer: Annotated[
        Scorer, typer.Option(help="expand/spans: how sentences are scored against the prompt.")
    ] = DEFAULT_SCORER,
    chunk_tokens: Annotated[int, typer.Option(min=16, help="Tokens per encoded chunk.")] = 512,
    tokenizer: Annotated[Path | None, typer.Option(help="Extensible-tokenizer checkpoint.")] = None,
    llm: LlmOption = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
) -> None:
    """Answer PROMPT with the frozen LLM, streaming tokens to stdout."""
    from extok_rag.ask.build import build_prompt
    from extok_rag.ask.context import CONTEXT_STRIDE, context_chunks, load_tokenizer
    from extok_rag.ask.modes import SCORES_SPANS
    from extok_rag.cli.console import load_llm
    from extok_rag.config import AskConfig, GenerationConfig, RuntimeConfig
    from extok_rag.models.embedder import Embedder
    from extok_rag.models.generation import stream_text

    cfg = AskConfig(
        top_n=0,
        k=check_k_option(mode.value, parse_k(k)),
        mode=mode.value,
        budget=parse_budget(budget),
        scorer=scorer.value,
    )
    text = read_context(context) if context and mode.value != "none" else None
    runtime = RuntimeConfig(device=device, dtype=dtype)  # type: ignore[arg-type]
    frozen = load_llm(llm, runtime)
    chunks = []
    if text is not None and context is not None:
        tok = load_tokenizer(frozen, tokenizer, notice=warn)
        chunks = context_chunks(frozen, tok, context.name, text, chunk_tokens)
    scores_spans = chunks and cfg.mode in SCORES_SPANS
    embedder = Embedder.load(None, runtime) if scores_spans else None
    built = build_prompt(frozen, prompt, chunks, cfg, CONTEXT_STRIDE, max_new_tokens, embedder)
    gen = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    for piece in stream_text(frozen, built.row, gen):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}")


def read_context(path: Path) -> str:
    if not path.is_file():
        raise ExtokError(f"context file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ExtokError(f"context file {path} is not UTF-8 text ({err.reason})") from err
    if not text.strip():
        raise ExtokError(f"context file {path} is empty")
    return text

"""`extok-rag generate`: one prompt to the frozen LLM, optionally with a context document given
raw, compressed into extensible embeddings, or not at all (to compare the three)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from extok_rag.cli.console import err_console, reports_errors
from extok_rag.config import DTYPE_HELP
from extok_rag.errors import ExtokError


class ContextMode(StrEnum):
    raw = "raw"
    compressed = "compressed"
    none = "none"


@reports_errors
def generate(
    prompt: Annotated[str, typer.Argument(help="The question or instruction.")],
    context: Annotated[Path | None, typer.Option(help="A text file to answer from.")] = None,
    mode: Annotated[
        ContextMode, typer.Option(help="How the context reaches the LLM.")
    ] = ContextMode.compressed,
    k: Annotated[int, typer.Option(min=1, help="Down-scaling factor when compressed.")] = 4,
    chunk_tokens: Annotated[int, typer.Option(min=16, help="Tokens per encoded chunk.")] = 512,
    tokenizer: Annotated[Path | None, typer.Option(help="Extensible-tokenizer checkpoint.")] = None,
    llm: Annotated[
        str | None, typer.Option(help="HF causal-LM directory (default SmolLM2).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    """Answer PROMPT with the frozen LLM, streaming tokens to stdout."""
    from extok_rag.cli.console import load_llm
    from extok_rag.config import GenerationConfig, RuntimeConfig
    from extok_rag.models.generation import stream_text

    text = read_context(context) if context and mode != ContextMode.none else None
    frozen = load_llm(llm, RuntimeConfig(device=device, dtype=dtype))  # type: ignore[arg-type]
    user: list = [prompt]
    if text is not None and mode == ContextMode.raw:
        user = [f"Context:\n{text}\n\nQuestion: {prompt}"]
    elif text is not None:
        chunks = compressed_context(frozen, text, k, chunk_tokens, tokenizer)
        user = ["Context:\n", *chunks, f"\n\nQuestion: {prompt}"]
    row = frozen.chat_row(user)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    for piece in stream_text(frozen, row, cfg):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


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


def compressed_context(frozen, text: str, k: int, chunk_tokens: int, checkpoint: Path | None):
    from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer

    if checkpoint is None:
        err_console.print(
            "[yellow]warning:[/yellow] no tokenizer checkpoint given: using an "
            "untrained extensible tokenizer, whose embeddings carry little content"
        )
        tok = ExtensibleTokenizer.from_llm(frozen)
    else:
        tok = ExtensibleTokenizer.from_pretrained(checkpoint, frozen)
    return tok.compress(frozen.tokenize(text), k, chunk_tokens)

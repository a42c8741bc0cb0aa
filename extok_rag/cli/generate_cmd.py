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
    expand = "expand"
    none = "none"


@reports_errors
def generate(
    prompt: Annotated[str, typer.Argument(help="The question or instruction.")],
    context: Annotated[Path | None, typer.Option(help="A text file to answer from.")] = None,
    mode: Annotated[
        ContextMode, typer.Option(help="How the context reaches the LLM.")
    ] = ContextMode.compressed,
    k: Annotated[int, typer.Option(min=1, help="Down-scaling factor when compressed.")] = 4,
    budget: Annotated[
        str,
        typer.Option(
            help="expand: prompt positions (or 'auto': the window less the answer); the "
            "sentences that best match the prompt are read raw, the rest compressed."
        ),
    ] = "auto",
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
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    row = prompt_row(frozen, prompt, context, text, mode, k, budget, chunk_tokens, tokenizer, cfg)
    row = row if row is not None else frozen.chat_row([prompt])
    for piece in stream_text(frozen, row, cfg):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def prompt_row(frozen, prompt, path, text, mode, k, budget, chunk_tokens, tokenizer, gen):
    """The prompt with its context file read as `mode` says (None: no context)."""
    if text is None:
        return None
    if mode == ContextMode.raw:
        return frozen.chat_row([f"Context:\n{text}\n\nQuestion: {prompt}"])
    if mode == ContextMode.expand:
        from extok_rag.cli.ask_cmd import parse_budget

        limit = parse_budget(budget)
        reserve = gen.max_new_tokens
        return expanded_row(frozen, prompt, path, text, chunk_tokens, tokenizer, limit, reserve)
    chunks = compressed_context(frozen, text, k, chunk_tokens, tokenizer)
    return frozen.chat_row(["Context:\n", *chunks, f"\n\nQuestion: {prompt}"])


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


def load_tokenizer(frozen, checkpoint: Path | None):
    """The given checkpoint, else the shipped one trained for this LLM, else an untrained one."""
    from extok_rag.models.defaults import resolve_tokenizer
    from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer

    path = checkpoint or resolve_tokenizer(None, frozen.identity)
    if path is None:
        err_console.print(
            "[yellow]warning:[/yellow] no trained tokenizer for this LLM: using an "
            "untrained extensible tokenizer, whose embeddings carry little content"
        )
        return ExtensibleTokenizer.from_llm(frozen)
    return ExtensibleTokenizer.from_pretrained(path, frozen)


def compressed_context(frozen, text: str, k: int, chunk_tokens: int, checkpoint: Path | None):
    tok = load_tokenizer(frozen, checkpoint)
    return tok.compress(frozen.tokenize(text), k, chunk_tokens)


def expanded_row(frozen, prompt, path, text, chunk_tokens, checkpoint, budget, reserve):
    """The file's chunks, each encoded whole (states at every position), read as `ask --mode
    expand` reads retrieved chunks: the sentences that best match the prompt raw."""
    import numpy as np
    import torch

    from extok_rag.chunking import Chunker, ChunkingConfig
    from extok_rag.config import AskConfig, RuntimeConfig
    from extok_rag.models.embedder import Embedder
    from extok_rag.query import Retrieved, build_prompt

    tok = load_tokenizer(frozen, checkpoint)
    pieces = Chunker(frozen.tokenizer, ChunkingConfig(chunk_tokens=chunk_tokens)).split(
        path.name, text
    )
    chunks = []
    for c in pieces:
        with torch.no_grad():
            states = tok.encode([torch.from_numpy(c.token_ids)])[0].float().cpu().numpy()
        states = states.astype(np.float16)
        chunks.append(
            Retrieved(-1, 0.0, c.doc_path, c.text, c.n_tokens, states, tok.config.downscale)
        )
    device, dtype = str(frozen.device), str(frozen.dtype).removeprefix("torch.")
    embedder = Embedder.load(None, RuntimeConfig(device=device, dtype=dtype))  # type: ignore[arg-type]
    cfg = AskConfig(top_n=len(chunks), mode="expand", budget=budget)
    return build_prompt(frozen, prompt, chunks, cfg, 1, reserve, embedder).row

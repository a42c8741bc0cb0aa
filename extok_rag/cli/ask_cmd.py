"""`extok-rag ask`: answer from an index — retrieved chunks compressed (or raw) + the raw
question into the frozen LLM, tokens streamed to stdout. No question: an interactive loop that
loads the models once."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from extok_rag.ask.modes import DEFAULT_MODE, MODES, check_mode
from extok_rag.cli.console import err_console, reports_errors
from extok_rag.config import DTYPE_HELP, RETRIEVAL_HELP, RETRIEVERS, SCORERS, AskConfig
from extok_rag.errors import ExtokError

Mode = StrEnum("Mode", {m: m for m in MODES})  # the one list of modes (ask.modes)
Scorer = StrEnum("Scorer", {s: s for s in SCORERS})
Retrieval = StrEnum("Retrieval", {r: r for r in RETRIEVERS})
DEFAULT_MODE_OPTION, DEFAULT_SCORER = Mode(DEFAULT_MODE), Scorer(AskConfig.scorer)
DEFAULT_RETRIEVAL = Retrieval(AskConfig.retrieval)
MODE_HELP = "How retrieved chunks reach the LLM: " + "; ".join(
    f"{m}: {h}" for m, h in MODES.items()
)


# Options `ask` shares with `serve` (one definition, the same help text).
RepeatStopOption = Annotated[
    int,
    typer.Option(
        min=0, help="Stop an answer once a run of N+ tokens repeats right after itself; 0: never."
    ),
]
IndexOption = Annotated[Path | None, typer.Option(help="Index folder or name under ./indexes/.")]
LlmOption = Annotated[str | None, typer.Option(help="HF causal-LM directory (default SmolLM2).")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
DtypeOption = Annotated[str, typer.Option(help=DTYPE_HELP)]


@reports_errors
def ask(
    question: Annotated[
        str | None, typer.Argument(help="The question (none: interactive).")
    ] = None,
    index: IndexOption = None,
    top_n: Annotated[int, typer.Option(min=1, help="Chunks to retrieve.")] = 4,
    k: Annotated[
        str, typer.Option(help="Down-scaling factor, or 'auto' (smallest that fits).")
    ] = "auto",
    mode: Annotated[Mode, typer.Option(help=MODE_HELP)] = DEFAULT_MODE_OPTION,
    budget: Annotated[
        str,
        typer.Option(
            help="auto/expand/spans/truncated: prompt positions, or 'auto' (the window less "
            "the answer)."
        ),
    ] = "auto",
    scorer: Annotated[
        Scorer, typer.Option(help="expand/spans: how sentences are scored against the question.")
    ] = DEFAULT_SCORER,
    retrieval: Annotated[
        Retrieval,
        typer.Option(help=RETRIEVAL_HELP + "."),
    ] = DEFAULT_RETRIEVAL,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    repeat_stop: RepeatStopOption = 8,
    show_sources: Annotated[bool, typer.Option(help="List the retrieved chunks.")] = False,
    source_lines: Annotated[
        bool, typer.Option(help="Head each chunk in the prompt with its file path (raw).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per answer.")] = False,
    llm: LlmOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
) -> None:
    """Answer QUESTION from an index built by `extok-rag index`."""
    from extok_rag.ask.retrieval import check_models
    from extok_rag.cli.console import load_llm
    from extok_rag.cli.index_cmd import print_notice
    from extok_rag.config import GenerationConfig, RuntimeConfig
    from extok_rag.indexes import open_index, resolve_index_dir
    from extok_rag.models.embedder import Embedder

    cfg = AskConfig(
        top_n=top_n,
        k=check_k_option(mode.value, parse_k(k)),
        mode=mode.value,
        source_lines=source_lines,
        budget=parse_budget(budget),
        scorer=scorer.value,
        retrieval=retrieval.value,
    )
    gen = GenerationConfig(max_new_tokens, temperature, repeat_stop=repeat_stop)
    snapshot = open_index(resolve_index_dir(index), notice=print_notice)
    runtime = RuntimeConfig(device=device, dtype=dtype)  # type: ignore[arg-type]
    frozen = load_llm(llm, runtime)
    embedder = Embedder.load(None, runtime)
    check_models(snapshot, frozen, embedder)
    session = (frozen, embedder, snapshot, cfg, gen, show_sources, as_json)
    if question is not None:
        answer_one(question, *session)
        return
    err_console.print("[dim]interactive: empty line or Ctrl-D to quit[/dim]")
    while (line := read_question()) is not None:
        answer_one(line, *session)


def check_k_option(mode: str, k: int | None) -> int | None:
    """`--k`, refused in one line (before any model loads) when `--mode` would ignore it."""
    check_mode(mode, k)
    return k


def parse_k(value: str) -> int | None:
    return parse_auto_int(value, "--k", "a positive integer")


def parse_budget(value: str) -> int | None:
    return parse_auto_int(value, "--budget", "a positive number of positions")


def parse_auto_int(value: str, option: str, expected: str) -> int | None:
    """'auto' -> None, else a positive integer; one clear error line otherwise."""
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ExtokError(f"{option} {value!r}: expected {expected} or 'auto'")
    return int(value)


def read_question(prompt: str = "? ") -> str | None:
    """A line typed after `prompt`, None at the end of input or on an empty line."""
    try:
        line = input(prompt).strip()
    except EOFError:
        return None
    return line or None


def answer_one(question, llm, embedder, snapshot, cfg, gen, show_sources, as_json) -> None:
    from extok_rag.ask.answer import ask as ask_query
    from extok_rag.ask.answer import describe, sources

    chunks, prompt, pieces = ask_query(llm, embedder, snapshot, question, cfg, gen)
    if prompt.chunks_read is not None and prompt.chunks_read < len(chunks) and not as_json:
        err_console.print(
            f"[yellow]the budget of {prompt.positions} positions holds {prompt.chunks_read} "
            f"of the {len(chunks)} retrieved chunks: raise --budget to read them all[/yellow]"
        )
    if show_sources and not as_json:
        for i, chunk in enumerate(chunks, start=1):
            err_console.print(
                f"[dim][{i}] {chunk.doc_path} (score {chunk.score:.3f}, "
                f"{chunk.n_tokens} tokens)[/dim]",
                highlight=False,
            )
    if as_json:
        answer = "".join(pieces).strip()
        record = {"question": question, "answer": answer, **describe(prompt, chunks)}
        sys.stdout.write(json.dumps({**record, "sources": sources(chunks)}) + "\n")
        return
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")

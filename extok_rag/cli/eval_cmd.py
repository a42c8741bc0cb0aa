"""`extok-rag eval`: evaluations. `eval lm` runs the paper's Table 1 protocol (perplexity of
the last 512 tokens of long held-out windows, context given raw, compressed or not at all)."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from typing import Annotated

import typer

from extok_rag.cli.console import err_console, out_console, reports_errors
from extok_rag.errors import ExtokError

eval_app = typer.Typer(
    name="eval",
    help="Evaluate the frozen LLM with and without extensible embeddings.",
    no_args_is_help=True,
)


@eval_app.callback()
def evaluations() -> None:
    """Evaluate the frozen LLM with and without extensible embeddings."""


REPORT_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "report.py"
DOCS_SECTION = "eval-lm"


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{option} takes positive integers, got {text!r}")
    return values


@eval_app.command("lm")
@reports_errors
def lm(
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="Trained extensible-tokenizer checkpoint (row d); none: d is n/a."),
    ] = None,
    untrained: Annotated[
        bool, typer.Option(help="Also run row (e), the untrained tokenizer.")
    ] = True,
    llm: Annotated[
        str | None, typer.Option(help="HF causal-LM directory (default SmolLM2).")
    ] = None,
    books: Annotated[
        Path | None,
        typer.Option(help="Folder of .txt books to use instead of the default set."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Cache of the book packages (default <home>/eval-data).")
    ] = None,
    max_books: Annotated[int | None, typer.Option(min=1, help="Use the first N books.")] = None,
    lengths: Annotated[
        str, typer.Option(help="Window lengths T in tokens, comma-separated.")
    ] = "2048,4096,8192,16384,32768",
    windows: Annotated[int, typer.Option(min=1, help="Windows (the same for each T).")] = 40,
    ks: Annotated[str, typer.Option(help="Down-scaling factors k, comma-separated.")] = (
        "2,4,8,16,32"
    ),
    chunk_len: Annotated[int, typer.Option(min=1, help="Tokens per encoded chunk.")] = 512,
    target_len: Annotated[int, typer.Option(min=1, help="Scored tokens per window.")] = 512,
    raw_positions: Annotated[
        int, typer.Option(min=2, help="Positions of the fixed-budget raw row (b).")
    ] = 2048,
    seed: Annotated[int, typer.Option(help="Seed of the window draw.")] = 0,
    batch_tokens: Annotated[
        int, typer.Option(min=1, help="Most positions per model call (memory bound).")
    ] = 8192,
    out: Annotated[Path | None, typer.Option(help="Write every number as JSON here.")] = None,
    write_docs: Annotated[
        bool, typer.Option(help="Write the table into docs/benchmarks.md (source checkout).")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16), bfloat16, float16, float32.")] = "auto",
) -> None:
    """Perplexity of the last 512 tokens of long held-out windows: no context, raw context
    (truncated or full) and extensible embeddings at each k (paper Table 1)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from extok_rag.cli.console import load_llm
    from extok_rag.config import RuntimeConfig, write_json
    from extok_rag.evaluation import books as book_data
    from extok_rag.evaluation.lm import LMEvalConfig, evaluate_lm
    from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer

    cfg = LMEvalConfig(
        lengths=parse_ints(lengths, "--lengths"),
        windows=windows,
        ks=parse_ints(ks, "--ks"),
        chunk_len=chunk_len,
        target_len=target_len,
        raw_positions=raw_positions,
        seed=seed,
        batch_tokens=batch_tokens,
    )
    if write_docs and not REPORT_SCRIPT.is_file():
        raise ExtokError(f"--write-docs needs a source checkout ({REPORT_SCRIPT} is missing)")
    with err_console.status("loading the evaluation books"):
        if books is not None:
            texts = book_data.load_book_dir(books, max_books)
        else:
            texts = book_data.load_default_books(data_dir, max_books)
    frozen = load_llm(llm, RuntimeConfig(device=device, dtype=dtype))  # type: ignore[arg-type]

    tokenizers, descriptions, notes = {}, {}, {}
    if tokenizer is not None:
        tokenizers["extok"] = ExtensibleTokenizer.from_pretrained(tokenizer, frozen)
        descriptions["extok"] = str(tokenizer)
    else:
        notes["extok"] = "no --tokenizer checkpoint given"
    if untrained:
        tokenizers["untrained"] = ExtensibleTokenizer.from_llm(frozen)
        n_layers = tokenizers["untrained"].config.num_layers
        descriptions["untrained"] = f"untrained, first {n_layers} LLM layers, no adapter"
    else:
        notes["untrained"] = "--no-untrained"

    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("windows × lengths", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = evaluate_lm(frozen, texts, cfg, tokenizers, descriptions, notes, advance)

    markdown = result.markdown()
    out_console.print(markdown, markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result.to_dict())
        err_console.print(f"wrote {out}")
    if write_docs:
        report = _report_module()
        command = command_line(cfg, tokenizer, books, max_books)
        body = docs_section(result, markdown, report.machine_line(), command)
        report.write_section(DOCS_SECTION, body)
        err_console.print(f"wrote section {DOCS_SECTION!r} of {report.DOC}")


def command_line(cfg, tokenizer: Path | None, books: Path | None, max_books: int | None) -> str:
    """The `eval lm` command that reproduces a run (defaults left out)."""
    from extok_rag.evaluation.lm import LMEvalConfig

    default = LMEvalConfig()
    args = ["extok-rag", "eval", "lm"]
    if tokenizer is not None:
        args += ["--tokenizer", str(tokenizer)]
    if books is not None:
        args += ["--books", str(books)]
    if max_books is not None:
        args += ["--max-books", str(max_books)]
    for name in ("lengths", "ks"):
        if getattr(cfg, name) != getattr(default, name):
            args += [f"--{name}", ",".join(map(str, getattr(cfg, name)))]
    for name in ("windows", "chunk_len", "target_len", "raw_positions", "seed"):
        if getattr(cfg, name) != getattr(default, name):
            args += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    return shlex.join(args)


def docs_section(result, markdown: str, machine: str, command: str) -> str:
    """The docs/benchmarks.md section: command, machine, tables, the books used."""
    books = ", ".join(f"`{b['name']}` ({b['tokens']:,} tokens)" for b in result.books)
    return "\n\n".join(
        [
            "## Language modelling on held-out books (paper Table 1 protocol)",
            f"`{command}` — {machine}.",
            markdown,
            f"Books: {books}. Their sha256 are pinned in `extok_rag/evaluation/books.py` "
            "(`DEFAULT_BOOKS`); they are never training data.",
        ]
    )


def _report_module():
    spec = importlib.util.spec_from_file_location("extok_benchmarks_report", REPORT_SCRIPT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module

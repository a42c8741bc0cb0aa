"""`extok-rag eval`: evaluations. `eval lm` runs the paper's Table 1 protocol (perplexity of
the last 512 tokens of long held-out windows, context given raw, compressed or not at all)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from extok_rag.cli.console import err_console, out_console, reports_errors
from extok_rag.config import DTYPE_HELP, FRAMES, RETRIEVERS, SCORERS, AskConfig
from extok_rag.evaluation.qa_conditions import ROW_FAMILIES

eval_app = typer.Typer(
    name="eval",
    help="Evaluate the frozen LLM with and without extensible embeddings.",
    no_args_is_help=True,
)


@eval_app.callback()
def evaluations() -> None:
    """Evaluate the frozen LLM with and without extensible embeddings."""


def parse_shares(text: str) -> tuple[float, ...]:
    try:
        shares = tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise typer.BadParameter(
            f"--expand-budgets takes shares like 0.25,0.35, got {text!r}"
        ) from None
    if any(not 0 < x <= 1 for x in shares):
        raise typer.BadParameter(f"--expand-budgets shares must be in (0, 1], got {text!r}")
    return shares


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{option} takes positive integers, got {text!r}")
    return values


def parse_choices(text: str, option: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """Comma-separated names, each one of `allowed`, at least one."""
    names = tuple(x for x in text.replace(" ", "").split(",") if x)
    if not names or set(names) - set(allowed):
        raise typer.BadParameter(f"{option} takes some of {', '.join(allowed)}, got {text!r}")
    return names


@eval_app.command("lm")
@reports_errors
def lm(
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Trained extensible-tokenizer checkpoint for row (d) (default: the shipped one)."
        ),
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
    states: Annotated[
        str,
        typer.Option(
            help="Rows (d)/(e) read states as encoded (float32), or round-tripped through an "
            "index's state encoding (float16, int8)."
        ),
    ] = "float32",
    batch_tokens: Annotated[
        int, typer.Option(min=1, help="Most positions per model call (memory bound).")
    ] = 8192,
    out: Annotated[Path | None, typer.Option(help="Write every number as JSON here.")] = None,
    write_docs: Annotated[
        bool, typer.Option(help="Write the table into docs/benchmarks.md (source checkout).")
    ] = False,
    resume: Annotated[
        bool, typer.Option(help="Reuse the windows a killed run with the same settings finished.")
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    """Perplexity of the last 512 tokens of long held-out windows: no context, raw context
    (truncated or full) and extensible embeddings at each k (paper Table 1)."""
    from extok_rag.cli.console import load_llm
    from extok_rag.config import RuntimeConfig
    from extok_rag.evaluation import books as book_data
    from extok_rag.evaluation import lm_run, report
    from extok_rag.evaluation.lm import LMEvalConfig
    from extok_rag.evaluation.lm_report import lm_markdown

    cfg = LMEvalConfig(
        lengths=parse_ints(lengths, "--lengths"),
        windows=windows,
        ks=parse_ints(ks, "--ks"),
        chunk_len=chunk_len,
        target_len=target_len,
        raw_positions=raw_positions,
        seed=seed,
        batch_tokens=batch_tokens,
        states=states,
    )
    if write_docs:
        report.check_checkout()
    with err_console.status("loading the evaluation books"):
        if books is not None:
            texts = book_data.load_book_dir(books, max_books)
        else:
            texts = book_data.load_default_books(data_dir, max_books)
    frozen = load_llm(llm, RuntimeConfig(device=device, dtype=dtype))  # type: ignore[arg-type]
    rows = lm_run.LMRows.load(frozen, tokenizer, untrained)
    with progress_bar("windows × lengths") as advance:
        result = lm_run.run_lm(frozen, texts, cfg, rows, resume, advance, notice=print_dim)
    markdown = lm_markdown(result)
    out_console.print(markdown, markup=False, highlight=False, soft_wrap=True)
    write_out(out, result.to_dict())
    if write_docs:
        command = lm_run.command_line(cfg, tokenizer, books, max_books)
        body = lm_run.docs_section(result, markdown, report.machine_line(), command)
        write_docs_section(lm_run.DOCS_SECTION, body)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[..., None]]:
    """A transient rich bar on stderr; yields `advance(done, total)` or, with a row name
    first, `advance(row, done, total)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def advance(*args) -> None:
            *row, done, total = args
            label = f"{description}: {row[0]}" if row else description
            bar.update(task, description=label, completed=done, total=total)

        yield advance


def print_dim(message: str) -> None:
    err_console.print(f"[dim]{message}[/dim]", highlight=False)


def write_out(out: Path | None, data: dict) -> None:
    from extok_rag.config import write_json

    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, data)
        err_console.print(f"wrote {out}")


def write_docs_section(name: str, body: str) -> None:
    from extok_rag.evaluation import report

    report.write_section(name, body)
    err_console.print(f"wrote section {name!r} of {report.DOC}")


@eval_app.command("qa")
@reports_errors
def qa(
    sets: Annotated[str, typer.Option(help="QA sets, comma-separated: squad, hotpotqa.")] = (
        "squad,hotpotqa"
    ),
    questions: Annotated[int, typer.Option(min=1, help="Questions per set.")] = 300,
    top_n: Annotated[int, typer.Option(min=1, help="Chunks retrieved per question.")] = 4,
    ks: Annotated[str, typer.Option(help="k of the compressed top-n rows.")] = "2,4,8,16",
    hybrid_k: Annotated[int, typer.Option(min=1, help="k of the hybrid row.")] = 4,
    budget_ks: Annotated[
        str,
        typer.Option(help="k of the compressed top-(k·n) rows (raw's position budget); '': none."),
    ] = "4",
    expand_budgets: Annotated[
        str,
        typer.Option(
            help="Shares of raw top-n's positions for the expand rows and their controls "
            "(spans only, raw truncated), e.g. 0.25,0.35,0.5; empty: none."
        ),
    ] = "",
    expand_scorer: Annotated[
        str, typer.Option(help=f"Span scorer of the expand rows: {', '.join(SCORERS)}.")
    ] = AskConfig.scorer,
    frames: Annotated[
        str,
        typer.Option(
            help=f"Frames of the expand rows and their controls, comma-separated: "
            f"{', '.join(FRAMES)} (light: the question once, a slot only for each chunk read; "
            "standard: the other modes' frame)."
        ),
    ] = AskConfig.frame,
    retrieval: Annotated[
        str, typer.Option(help=f"How chunks are retrieved: {', '.join(RETRIEVERS)}.")
    ] = AskConfig.retrieval,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 32,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts decoded together.")] = 8,
    latency_questions: Annotated[
        int, typer.Option(min=0, help="Questions timed one at a time per row.")
    ] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the question draw.")] = 0,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="Extensible-tokenizer checkpoint, or 'untrained' (default: shipped)."),
    ] = None,
    llm: Annotated[
        str | None, typer.Option(help="HF causal-LM directory (default SmolLM2).")
    ] = None,
    embedder: Annotated[
        Path | None, typer.Option(help="Retrieval embedder directory (default MiniLM).")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Corpora and indexes (default <home>/eval-qa).")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Cache of the QA package (default <home>/eval-data).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write every answer and score as JSON.")] = None,
    write_docs: Annotated[
        bool, typer.Option(help="Write the tables into docs/benchmarks.md (source checkout).")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(help="Reuse the conditions a killed run with the same settings finished."),
    ] = True,
    rows: Annotated[
        str,
        typer.Option(
            help="Row families to run, comma-separated (default all; a subset reuses and "
            "extends the same journal, so disjoint subsets can run as parallel processes)."
        ),
    ] = ",".join(ROW_FAMILIES),
    states: Annotated[
        str | None,
        typer.Option(
            help="State encoding of the sets' indexes: int8 (<work-dir>/<set>/index-int8) or "
            "float16 (<set>/index), from the same corpus; default: `index`'s default (int8)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    """RAG question answering with gold answers (SQuAD v2 answerable, HotpotQA distractor):
    no retrieval, raw top-n, compressed top-n at each k, hybrid, compressed at raw's budget."""
    from extok_rag.cli.console import load_llm
    from extok_rag.cli.index_cmd import RichProgress
    from extok_rag.config import SCORERS, RuntimeConfig, home_dir
    from extok_rag.evaluation import report
    from extok_rag.evaluation.qa_conditions import QAEvalConfig
    from extok_rag.evaluation.qa_data import QA_SETS
    from extok_rag.evaluation.qa_report import qa_markdown
    from extok_rag.evaluation.qa_run import DOCS_SECTION, QARun, qa_docs_section
    from extok_rag.indexes import STATE_ENCODINGS
    from extok_rag.indexing import DEFAULT_STATE_ENCODING
    from extok_rag.models.defaults import resolve_tokenizer

    names = parse_choices(sets, "--sets", QA_SETS)
    if write_docs:
        report.check_checkout()
    if expand_scorer not in SCORERS:
        raise typer.BadParameter(f"--expand-scorer takes one of {', '.join(SCORERS)}")
    if retrieval not in RETRIEVERS:
        raise typer.BadParameter(f"--retrieval takes one of {', '.join(RETRIEVERS)}")
    states = states or DEFAULT_STATE_ENCODING
    if states not in STATE_ENCODINGS:
        raise typer.BadParameter(f"--states must be {' or '.join(map(repr, STATE_ENCODINGS))}")
    cfg = QAEvalConfig(
        questions=questions,
        top_n=top_n,
        ks=parse_ints(ks, "--ks"),
        hybrid_k=hybrid_k,
        budget_ks=parse_ints(budget_ks, "--budget-ks") if budget_ks.strip() else (),
        expand_budgets=parse_shares(expand_budgets),
        expand_scorer=expand_scorer,
        frames=parse_choices(frames, "--frames", FRAMES),
        retrieval=retrieval,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        latency_questions=latency_questions,
        seed=seed,
    )
    runtime = RuntimeConfig(device=device, dtype=dtype)  # type: ignore[arg-type]
    frozen = load_llm(llm, runtime, decodes_long=True)
    checkpoint = resolve_tokenizer(tokenizer, frozen.identity)
    root = work_dir or home_dir() / "eval-qa"
    families = parse_choices(rows, "--rows", ROW_FAMILIES)
    run = QARun(
        cfg, frozen, checkpoint, embedder, root, runtime, states, families, resume, data_dir
    )
    results = []
    for name in names:
        with progress_bar(name) as advance:
            results.append(run.evaluate(name, RichProgress(), advance, notice=print_dim))
    markdown = qa_markdown(results)
    out_console.print(markdown, markup=False, highlight=False, soft_wrap=True)
    write_out(out, {"config": cfg.to_dict(), "sets": [r.to_dict() for r in results]})
    if write_docs:
        body = qa_docs_section(markdown, report.machine_line(), run, list(names))
        write_docs_section(DOCS_SECTION, body)

"""`extok-rag eval`: evaluations. `eval lm` runs the paper's Table 1 protocol (perplexity of
the last 512 tokens of long held-out windows, context given raw, compressed or not at all)."""

from __future__ import annotations

import importlib.util
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from extok_rag.cli.console import err_console, out_console, reports_errors
from extok_rag.config import DTYPE_HELP
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from extok_rag.cli.console import load_llm
    from extok_rag.config import RuntimeConfig, write_json
    from extok_rag.evaluation import books as book_data
    from extok_rag.evaluation.lm import LMEvalConfig, evaluate_lm
    from extok_rag.evaluation.lm_report import lm_markdown
    from extok_rag.models.defaults import resolve_tokenizer
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
        states=states,
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
    checkpoint = resolve_tokenizer(tokenizer, frozen.identity)
    if checkpoint is not None:
        tokenizers["extok"] = ExtensibleTokenizer.from_pretrained(checkpoint, frozen)
        descriptions["extok"] = str(checkpoint)
    else:
        notes["extok"] = "no trained checkpoint for this LLM"
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

        journal = lm_journal(cfg, texts, frozen, checkpoint, sorted(tokenizers), resume)
        result = evaluate_lm(frozen, texts, cfg, tokenizers, descriptions, notes, advance, journal)

    markdown = lm_markdown(result)
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


def lm_journal(cfg, texts, frozen, checkpoint, kinds: list[str], resume: bool):
    """The journal of an `eval lm` run: settings = everything that changes a number."""
    from extok_rag import __version__
    from extok_rag.evaluation.journal import file_digest

    weights = checkpoint / "tokenizer.safetensors" if checkpoint is not None else None
    settings = {
        "config": cfg.to_dict(),
        "books": [b.sha256 for b in texts],
        "llm": frozen.identity.to_dict(),
        "tokenizer": file_digest(weights) if weights is not None and weights.is_file() else None,
        "rows": kinds,
        "dtype": str(frozen.dtype),
        "device": str(frozen.device),
        "extok_rag": __version__,
    }
    return open_journal("lm", settings, resume, "windows")


def open_journal(kind: str, settings: dict, resume: bool, pieces: str, root: Path | None = None):
    """Open (or, without --resume, restart) a journal and say when a run resumes."""
    from extok_rag.evaluation.journal import Journal

    journal = Journal.open(kind, settings, root)
    if not resume:
        journal.path.unlink(missing_ok=True)
        journal.done.clear()
    elif journal.done:
        err_console.print(f"resuming {len(journal.done)} finished {pieces} from {journal.path}")
    return journal


def command_line(cfg, tokenizer: str | None, books: Path | None, max_books: int | None) -> str:
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
    for name in ("windows", "chunk_len", "target_len", "raw_positions", "seed", "states"):
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


QA_SECTION = "eval-qa"


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
        str, typer.Option(help="Span scorer of the expand rows: minilm, lexical, both, llm.")
    ] = "both",
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
            help="Row families to run, comma-separated: none, raw, compressed, hybrid, budget, "
            "expand, spans, truncated (default all; a subset reuses and extends the same "
            "journal, so disjoint subsets can run as parallel processes)."
        ),
    ] = "none,raw,compressed,hybrid,budget,expand,spans,truncated",
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
    from extok_rag.config import RuntimeConfig, home_dir, write_json
    from extok_rag.evaluation.qa import QAEvalConfig
    from extok_rag.evaluation.qa_data import QA_SETS
    from extok_rag.evaluation.qa_report import qa_markdown
    from extok_rag.models.defaults import resolve_tokenizer

    names = parse_choices(sets, "--sets", QA_SETS)
    if write_docs and not REPORT_SCRIPT.is_file():
        raise ExtokError(f"--write-docs needs a source checkout ({REPORT_SCRIPT} is missing)")
    from extok_rag.spans import SCORERS

    if expand_scorer not in SCORERS:
        raise typer.BadParameter(f"--expand-scorer takes one of {', '.join(SCORERS)}")
    from extok_rag.evaluation.qa import ROW_FAMILIES
    from extok_rag.indexes import STATE_ENCODINGS
    from extok_rag.indexing.build import DEFAULT_STATE_ENCODING

    states = states or DEFAULT_STATE_ENCODING
    if states not in STATE_ENCODINGS:
        raise typer.BadParameter(f"--states must be {' or '.join(map(repr, STATE_ENCODINGS))}")
    families = parse_choices(rows, "--rows", ROW_FAMILIES)
    cfg = QAEvalConfig(
        questions=questions,
        top_n=top_n,
        ks=parse_ints(ks, "--ks"),
        hybrid_k=hybrid_k,
        budget_ks=parse_ints(budget_ks, "--budget-ks") if budget_ks.strip() else (),
        expand_budgets=parse_shares(expand_budgets),
        expand_scorer=expand_scorer,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        latency_questions=latency_questions,
        seed=seed,
    )
    runtime = RuntimeConfig(device=device, dtype=dtype)  # type: ignore[arg-type]
    frozen = load_llm(llm, runtime)
    checkpoint = resolve_tokenizer(tokenizer, frozen.identity)
    root = work_dir or home_dir() / "eval-qa"
    results = [
        run_qa_set(
            name,
            cfg,
            frozen,
            checkpoint,
            embedder,
            root,
            data_dir,
            runtime,
            resume,
            states,
            families,
        )
        for name in names
    ]
    markdown = qa_markdown(results)
    out_console.print(markdown, markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, {"config": cfg.to_dict(), "sets": [r.to_dict() for r in results]})
        err_console.print(f"wrote {out}")
    if write_docs:
        report = _report_module()
        body = qa_docs_section(markdown, report.machine_line(), checkpoint, cfg, names)
        report.write_section(QA_SECTION, body)
        err_console.print(f"wrote section {QA_SECTION!r} of {report.DOC}")


def run_qa_set(
    name,
    cfg,
    frozen,
    checkpoint,
    embedder_dir,
    root,
    data_dir,
    runtime,
    resume,
    states,
    rows,
):
    """Corpus files → index (incremental; rebuilt when the models changed) → evaluation,
    each finished condition journaled (resumed on a rerun with the same settings; the index's
    manifest, state encoding included, is part of them)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from extok_rag.evaluation.qa import evaluate_qa
    from extok_rag.evaluation.qa_data import load_qa_set, write_corpus
    from extok_rag.indexes import open_index
    from extok_rag.models.embedder import Embedder

    with err_console.status(f"loading {name}"):
        qa_set = load_qa_set(name, cfg.questions, cfg.seed, data_dir)
        write_corpus(qa_set, root / name / "corpus")
    index_dir = qa_index_dir(root / name, states)
    index_qa_corpus(root / name, index_dir, frozen, checkpoint, embedder_dir, states)
    snapshot = open_index(index_dir)
    retrieval = Embedder.load(embedder_dir, runtime)
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task(name, total=None)

        def advance(condition: str, done: int, total: int) -> None:
            bar.update(task, description=f"{name}: {condition}", completed=done, total=total)

        journal = qa_journal(name, cfg, snapshot, frozen, root / name / "runs", resume)
        return evaluate_qa(frozen, retrieval, snapshot, qa_set, cfg, advance, journal, rows)


def qa_journal(name, cfg, snapshot, frozen, folder: Path, resume: bool):
    """The journal of one set's run (in the set's work folder): settings = everything that
    changes an answer."""
    from extok_rag import __version__

    manifest = snapshot.manifest.to_dict()
    for volatile in ("created", "updated", "table_version", "vector_file"):
        manifest.pop(volatile, None)
    settings = {
        "set": name,
        "config": cfg.to_dict(),
        "index": manifest,
        "llm": frozen.identity.to_dict(),
        "dtype": str(frozen.dtype),
        "device": str(frozen.device),
        "extok_rag": __version__,
    }
    return open_journal("qa", settings, resume, f"{name} conditions", folder)


def qa_index_dir(folder: Path, states: str) -> Path:
    """A set's index for a state encoding; float16 keeps the folder indexes always had."""
    return folder / ("index" if states == "float16" else f"index-{states}")


def index_qa_corpus(
    folder: Path, index_dir: Path, frozen, checkpoint: Path | None, embedder_dir, states: str
) -> None:
    """`extok-rag index <folder>/corpus --index INDEX_DIR --states STATES`, in process."""
    from extok_rag.cli.index_cmd import RichProgress
    from extok_rag.errors import IncompatibleModelError
    from extok_rag.indexing import IndexModels, IndexSettings, build_index

    models = IndexModels(frozen, checkpoint, embedder_dir)
    settings = IndexSettings(state_encoding=states)
    with RichProgress() as progress:
        try:
            build_index(folder / "corpus", index_dir, models, settings, progress=progress)
        except IncompatibleModelError:
            err_console.print(f"[dim]{index_dir}: other models; re-indexing[/dim]")
            build_index(
                folder / "corpus", index_dir, models, settings, rebuild=True, progress=progress
            )


def qa_docs_section(markdown: str, machine: str, checkpoint, cfg, names: list[str]) -> str:
    from extok_rag.evaluation.qa import QAEvalConfig

    default = QAEvalConfig()
    args = ["extok-rag", "eval", "qa", "--sets", ",".join(names)]
    for key, value in cfg.to_dict().items():
        if value != getattr(default, key):
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            args += [f"--{key.replace('_', '-')}", text]
    tokenizer = f"`{checkpoint}`" if checkpoint else "the untrained tokenizer"
    return "\n\n".join(
        [
            "## RAG question answering (`eval qa`)",
            f"`{shlex.join(args)}` — {machine}. Extensible tokenizer: {tokenizer}.",
            QA_NOTES,
            markdown,
        ]
    )


QA_NOTES = (
    "Accuracy: a normalised gold answer (SQuAD normalisation) appears in the greedy answer "
    "(at most the row's max new tokens); F1: SQuAD token F1. Recall@n: the share of a "
    "question's gold paragraphs among the retrieved chunks' files. Prompt positions: the whole "
    "chat prompt (template, question twice, context). Latency (median) is timed on the first "
    "questions, answered one at a time as `ask` answers them (their answers are scored too; "
    "the rest run batched): prefill = prompt forward pass to the first token, total = "
    "retrieval + prompt + whole answer. SQuAD: the corpus is all 1,204 dev "
    "paragraphs; HotpotQA: the union of the drawn questions' 10 distractor-setting paragraphs "
    "(yes/no questions left out)."
)

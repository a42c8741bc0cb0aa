"""An `eval lm` run: the tokenizers of rows (d) and (e), the journal that resumes a killed run,
and the docs section with the command that reproduces it. `extok-rag eval lm` parses options
and draws progress; the run is here."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from extok_rag import __version__
from extok_rag.evaluation.books import Book
from extok_rag.evaluation.journal import Journal, file_digest, open_journal
from extok_rag.evaluation.lm import LMEvalConfig, LMEvalResult, evaluate_lm
from extok_rag.models.defaults import resolve_tokenizer
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM

DOCS_SECTION = "eval-lm"


@dataclass
class LMRows:
    """The extensible tokenizers of the compressed rows, by kind ("extok", "untrained")."""

    checkpoint: Path | None = None
    tokenizers: dict[str, ExtensibleTokenizer] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # why a row is absent

    @classmethod
    def load(cls, llm: FrozenLLM, tokenizer: str | None, untrained: bool) -> LMRows:
        """Row (d): the given checkpoint, else the shipped one; row (e): the untrained one."""
        rows = cls(resolve_tokenizer(tokenizer, llm.identity))
        if rows.checkpoint is not None:
            rows.tokenizers["extok"] = ExtensibleTokenizer.from_pretrained(rows.checkpoint, llm)
            rows.descriptions["extok"] = str(rows.checkpoint)
        else:
            rows.notes["extok"] = "no trained checkpoint for this LLM"
        if untrained:
            rows.tokenizers["untrained"] = ExtensibleTokenizer.from_llm(llm)
            n_layers = rows.tokenizers["untrained"].config.num_layers
            rows.descriptions["untrained"] = f"untrained, first {n_layers} LLM layers, no adapter"
        else:
            rows.notes["untrained"] = "--no-untrained"
        return rows


def lm_journal(
    cfg: LMEvalConfig, books: list[Book], llm: FrozenLLM, rows: LMRows, resume: bool, notice
) -> Journal:
    """The journal of an `eval lm` run: settings = everything that changes a number."""
    weights = rows.checkpoint / "tokenizer.safetensors" if rows.checkpoint is not None else None
    settings = {
        "config": cfg.to_dict(),
        "books": [b.sha256 for b in books],
        "llm": llm.identity.to_dict(),
        "tokenizer": file_digest(weights) if weights is not None and weights.is_file() else None,
        "rows": sorted(rows.tokenizers),
        "dtype": str(llm.dtype),
        "device": str(llm.device),
        "extok_rag": __version__,
    }
    return open_journal("lm", settings, resume, "windows", notice=notice)


def run_lm(
    llm: FrozenLLM,
    books: list[Book],
    cfg: LMEvalConfig,
    rows: LMRows,
    resume: bool = True,
    advance: Callable[[int, int], None] | None = None,
    notice: Callable[[str], None] | None = None,
) -> LMEvalResult:
    """Every row on every window, each finished window journaled (and reused on a rerun)."""
    journal = lm_journal(cfg, books, llm, rows, resume, notice)
    return evaluate_lm(
        llm, books, cfg, rows.tokenizers, rows.descriptions, rows.notes, advance, journal
    )


def command_line(
    cfg: LMEvalConfig, tokenizer: str | None, books: Path | None, max_books: int | None
) -> str:
    """The `eval lm` command that reproduces a run (defaults left out)."""
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


def docs_section(result: LMEvalResult, markdown: str, machine: str, command: str) -> str:
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

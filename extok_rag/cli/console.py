"""Output helpers shared by commands: rich consoles and one-line error reporting."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from extok_rag.errors import ExtokError

err_console = Console(stderr=True)  # progress, warnings and errors
out_console = Console()  # results

F = TypeVar("F", bound=Callable)


def reports_errors(func: F) -> F:
    """Render our errors as one red line on stderr (exit 1); Ctrl-C exits 130 quietly."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ExtokError as err:
            # escaped: a message may hold brackets, e.g. pip install 'extok-rag[ray]'
            message = escape(str(err))
            err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def quiet_transformers() -> None:
    """Hide transformers' own progress bars and info logs: ours go to stderr via rich."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_llm(spec: str | None, runtime, decodes_long: bool = False):
    """Load the frozen LLM behind a status line that says when the one-time conversion runs.
    `decodes_long` (chat, read, eval qa: thousands of tokens): start building the C++ decoding
    step if this machine has no build yet (`models.native`; decoding switches to it once it
    lands). A one-shot answer never waits for that build."""
    from extok_rag.models import defaults, native
    from extok_rag.models.llm import FrozenLLM

    quiet_transformers()
    converting = spec in (None, "default") and not defaults.is_llm_cached()
    message = (
        "converting SmolLM2's GGUF into the safetensors cache (once, ~20 s)"
        if converting
        else "loading the LLM"
    )
    with err_console.status(message):
        llm = FrozenLLM.load(spec, runtime)
    if decodes_long:
        native.build_in_background()
    return llm

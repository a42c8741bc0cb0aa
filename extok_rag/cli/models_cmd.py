"""`extok-rag models`: which default models resolve, from where, and their sizes."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from extok_rag.cli.console import human_bytes, out_console, reports_errors
from extok_rag.config import DEFAULT_LLM_NAME
from extok_rag.errors import ExtokError, ModelNotFoundError


@reports_errors
def models(
    build: Annotated[
        bool,
        typer.Option(
            "--build",
            help="Build the C++ decoding step now (once per machine and torch version, "
            "~20 s); serve, chat, read and eval build it on their own.",
        ),
    ] = False,
) -> None:
    """Show the default models: where each comes from, where it is cached, its size."""
    if build:
        build_native()
    table = Table(title="extok-rag default models", show_lines=True)
    table.add_column("role")
    table.add_column("model, source and path", overflow="fold", ratio=1)
    table.add_column("size", justify="right")
    table.add_column("status")
    for row in (llm_row(), embedder_row(), tokenizer_row()):
        table.add_row(*row)
    out_console.print(table)
    out_console.print(compute_line())


def compute_line() -> str:
    """Where `--device auto --dtype auto` runs the models here, why that dtype, and which
    weights decoding reads."""
    from extok_rag.config import RuntimeConfig, cpu_description, dtype_choice
    from extok_rag.models.q4 import kernel_available

    device = RuntimeConfig().resolve_device()
    dtype, why = dtype_choice(device)
    four_bit = device == "cpu" and dtype == "bfloat16" and kernel_available()
    decode = (
        "the default LLM's 4-bit GGUF weights (torch's int4 kernel; models/q4.py)"
        if four_bit
        else "the LLM's own weights"
    )
    lines = [f"compute (auto): {device}, {dtype}; {why}", f"decoding reads: {decode}"]
    return "\n".join([*lines, native_line(), f"CPU: {cpu_description()}"])


def native_line() -> str:
    """Whether decoding steps run in C++ (`models.native`) here."""
    from extok_rag.models import native

    if not native.enabled():
        return "decoding step: Python (EXTOK_RAG_NATIVE=0)"
    if native.library_path().is_file():
        return f"decoding step: C++, built: {native.library_path()}"
    why = native.failure() or "not built yet"
    return (
        f"decoding step: Python ({why}); `extok-rag models --build` builds the C++ step, "
        "as serve, chat, read and eval do on their own"
    )


def build_native() -> None:
    from extok_rag.cli.console import err_console
    from extok_rag.models import native

    if not native.enabled():
        err_console.print("the C++ decoding step is turned off (EXTOK_RAG_NATIVE=0)")
        return
    with err_console.status("building the C++ decoding step (~20 s)"):
        module = native.load(build=True, retry=True)
    if module is None:
        raise ExtokError(f"the C++ decoding step was not built: {native.failure()}")
    err_console.print(f"C++ decoding step ready: {native.library_path()}")


def llm_row() -> tuple[str, str, str, str]:
    from extok_rag.models import defaults

    name = "SmolLM2-135M-Instruct"
    try:
        gguf = defaults.gguf_path()
    except ModelNotFoundError as err:
        return "frozen LLM", f"{name}\n{err}", "-", "[red]missing[/red]"
    cache = defaults.llm_cache_dir()
    where = f"{name}\n{defaults.GGUF_PACKAGE} wheel: {gguf}\ncache: {cache}"
    size = human_bytes(gguf.stat().st_size) + " GGUF"
    if defaults.is_llm_cached():
        cached = defaults.ResolvedModel(name, cache, "cache").size_bytes
        return "frozen LLM", where, f"{size}\n{human_bytes(cached)} cache", "ready (cached)"
    return "frozen LLM", where, size, "converted on first use (~20 s)"


def embedder_row() -> tuple[str, str, str, str]:
    from extok_rag.models import defaults

    try:
        emb = defaults.resolve_embedder()
    except ModelNotFoundError as err:
        return "retrieval embedder", f"all-MiniLM-L6-v2\n{err}", "-", "[red]missing[/red]"
    return (
        "retrieval embedder",
        f"{emb.name}\n{emb.source}: {emb.path}",
        human_bytes(emb.size_bytes),
        "ready",
    )


def tokenizer_row() -> tuple[str, str, str, str]:
    from extok_rag.models.defaults import DEFAULT_TOKENIZER_DIR

    weights = DEFAULT_TOKENIZER_DIR / "tokenizer.safetensors"
    if not weights.is_file():
        return (
            "extensible tokenizer",
            "first layers of the frozen LLM\nbuilt from the LLM",
            "-",
            "untrained: no shipped checkpoint",
        )
    return (
        "extensible tokenizer",
        f"trained for {DEFAULT_LLM_NAME} (LoRA + adapter deltas)\n"
        f"shipped in the package: {DEFAULT_TOKENIZER_DIR}",
        human_bytes(weights.stat().st_size),
        "ready (model card: README.md beside it)",
    )

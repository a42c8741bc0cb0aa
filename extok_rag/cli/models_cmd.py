"""`extok-rag models`: which default models resolve, from where, and their sizes."""

from __future__ import annotations

from rich.table import Table

from extok_rag.cli.console import human_bytes, out_console, reports_errors
from extok_rag.errors import ModelNotFoundError


@reports_errors
def models() -> None:
    """Show the default models: where each comes from, where it is cached, its size."""
    from extok_rag.models import defaults

    table = Table(title="extok-rag default models")
    for column in ("role", "model", "source", "path", "size", "status"):
        table.add_column(column, overflow="fold")
    try:
        gguf = defaults.gguf_path()
        table.add_row(
            "frozen LLM",
            "SmolLM2-135M-Instruct",
            f"{defaults.GGUF_PACKAGE} wheel",
            str(gguf),
            human_bytes(gguf.stat().st_size),
            "GGUF (Q4_1)",
        )
        cache = defaults.llm_cache_dir()
        cached = defaults.is_llm_cached()
        size = human_bytes(defaults.ResolvedModel("", cache, "").size_bytes) if cached else "-"
        status = "converted" if cached else "converted on first use (~20 s)"
        table.add_row("", "", "safetensors cache", str(cache), size, status)
    except ModelNotFoundError as err:
        table.add_row("frozen LLM", "SmolLM2-135M-Instruct", "missing", str(err), "-", "missing")
    try:
        emb = defaults.resolve_embedder()
        table.add_row(
            "retrieval embedder",
            emb.name,
            emb.source,
            str(emb.path),
            human_bytes(emb.size_bytes),
            "ready",
        )
    except ModelNotFoundError as err:
        table.add_row("retrieval embedder", "all-MiniLM-L6-v2", "missing", str(err), "-", "missing")
    table.add_row(
        "extensible tokenizer",
        "first 8 layers of the LLM",
        "built from the LLM",
        "-",
        "-",
        "untrained: no trained checkpoint ships yet",
    )
    out_console.print(table)

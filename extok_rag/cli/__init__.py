"""Command-line interface (typer + rich)."""

from extok_rag.cli.app import app, main

__all__ = ["app", "main"]

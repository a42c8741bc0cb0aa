"""The `extok-rag` typer app. Commands live one per module; heavy imports stay inside them so
that `extok-rag --help` is fast."""

from __future__ import annotations

import typer

from extok_rag import __version__
from extok_rag.cli.ask_cmd import ask
from extok_rag.cli.chat_cmd import chat
from extok_rag.cli.data_cmd import data_app
from extok_rag.cli.eval_cmd import eval_app
from extok_rag.cli.generate_cmd import generate
from extok_rag.cli.index_cmd import index, info
from extok_rag.cli.models_cmd import models
from extok_rag.cli.read_cmd import read
from extok_rag.cli.serve_cmd import serve
from extok_rag.cli.train_cmd import train

app = typer.Typer(
    name="extok-rag",
    help="RAG with Extensible Tokenization: retrieved chunks compressed k-fold for a frozen LLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the extok-rag version."""
    typer.echo(f"extok-rag {__version__}")


app.command()(models)
app.command()(index)
app.command()(info)
app.command()(ask)
app.command()(generate)
app.command()(read)
app.command()(chat)
app.command()(serve)
app.command()(train)
app.add_typer(data_app)
app.add_typer(eval_app, name="eval")


def main() -> None:
    app()

"""`extok-rag serve`: an HTTP API over an index — /ask (JSON or server-sent events), OpenAI
chat completions, /health and /info — on FastAPI + uvicorn. The models load once; answers
decode together in one continuous batch on a worker thread, behind a bounded queue
(`extok_rag/serve/`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from extok_rag.cli.ask_cmd import (
    DeviceOption,
    DtypeOption,
    IndexOption,
    LlmOption,
    RepeatStopOption,
)
from extok_rag.cli.console import err_console, reports_errors


@reports_errors
def serve(
    index: IndexOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    max_batch: Annotated[
        int, typer.Option(min=1, help="Answers decoded together; more wait in the queue.")
    ] = 16,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Requests waiting beyond the batch; beyond: 503.")
    ] = 32,
    max_new_tokens: Annotated[
        int, typer.Option(min=1, help="Answer tokens when a request gives none.")
    ] = 128,
    max_new_tokens_limit: Annotated[
        int, typer.Option(min=1, help="Most answer tokens a request may ask for (422 above).")
    ] = 1024,
    max_question_chars: Annotated[
        int, typer.Option(min=1, help="Longest question in characters (413 above).")
    ] = 4000,
    max_top_n: Annotated[int, typer.Option(min=1, help="Largest top_n (422 above).")] = 16,
    repeat_stop: RepeatStopOption = 8,
    llm: LlmOption = None,
    embedder: Annotated[
        Path | None, typer.Option(help="Retrieval embedder directory (default all-MiniLM-L6-v2).")
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            help="Extensible-tokenizer checkpoint that condenses chats outgrowing the window "
            "(default: the shipped one for this LLM)."
        ),
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="EXTOK_RAG_API_KEY",
            help="Require this key (Authorization: Bearer KEY) on every route but /health.",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="uvicorn's log level: critical, error, warning, info, debug.")
    ] = "info",
    replicas: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Serve through Ray Serve with N replicas behind one route, each with its own "
            "models and batch ($RAY_ADDRESS's cluster, else a local one; the `ray` extra).",
        ),
    ] = None,
) -> None:
    """Serve answers from an index over HTTP (OpenAI-compatible /v1/chat/completions too)."""
    from extok_rag.cli.index_cmd import print_notice
    from extok_rag.config import RuntimeConfig
    from extok_rag.indexes import open_index, resolve_index_dir
    from extok_rag.serve import ServeLimits, ServeOptions

    if max_new_tokens > max_new_tokens_limit:
        raise typer.BadParameter("--max-new-tokens must not exceed --max-new-tokens-limit")
    index_dir = resolve_index_dir(index)
    snapshot = open_index(index_dir, notice=print_notice)  # before the models: fail fast
    limits = ServeLimits(
        max_question_chars=max_question_chars,
        max_top_n=max_top_n,
        max_new_tokens=max_new_tokens_limit,
        default_new_tokens=max_new_tokens,
        repeat_stop=repeat_stop,
    )
    runtime = RuntimeConfig(device=device, dtype=dtype)  # type: ignore[arg-type]
    options = ServeOptions(
        index_dir,
        llm=llm,
        embedder=embedder,
        tokenizer=tokenizer,
        runtime=runtime,
        limits=limits,
        max_queue=max_queue,
        max_batch=max_batch,
        api_key=api_key,
    )
    if replicas is None:
        serve_here(options, snapshot, host, port, log_level)
    else:
        serve_replicas(options, snapshot, replicas, host, port, log_level)


def serve_here(options, snapshot, host: str, port: int, log_level: str) -> None:
    """One process: the models, the worker and uvicorn."""
    import uvicorn

    from extok_rag.cli.console import load_llm
    from extok_rag.cli.index_cmd import index_facts, print_notice
    from extok_rag.serve import build_app

    app, state = build_app(options, index_facts, load_llm, print_notice, snapshot)
    batch = f"max batch {options.max_batch}, max queue {options.max_queue}"
    announce(options, snapshot, host, f"with {state.model_name} on http://{host}:{port} ({batch})")
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def serve_replicas(options, snapshot, replicas: int, host: str, port: int, log_level: str) -> None:
    """Ray Serve: `replicas` replicas, each the app above (`integrations/ray_serve.py`)."""
    from extok_rag.cli.index_cmd import index_facts
    from extok_rag.errors import ExtokError

    try:
        from extok_rag.integrations import ray_serve
    except ImportError as exc:
        message = f"--replicas needs Ray Serve: pip install 'extok-rag[ray]' ({exc})"
        raise ExtokError(message) from exc
    batch = f"each: max batch {options.max_batch}, max queue {options.max_queue}"
    where = f"with {replicas} Ray Serve replicas on http://{host}:{port} ({batch})"
    ready = lambda: announce(options, snapshot, host, where)  # noqa: E731
    ray_serve.run(options, replicas, host, port, index_facts, ready, log_level)


def announce(options, snapshot, host: str, where: str) -> None:
    """The start line: what is served, where, and who can reach it."""
    err_console.print(
        f"serving index {options.index_dir} (table version {snapshot.manifest.table_version}) "
        f"{where}; " + access_line(host, options.api_key),
        highlight=False,
        soft_wrap=True,
    )


def access_line(host: str, api_key: str | None) -> str:
    """Who can reach the server, said at start."""
    import ipaddress

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    reach = "this machine only" if loopback else f"any machine that reaches {host}"
    key = "an API key required" if api_key else "no API key"
    line = f"{reach}, {key}"
    if not loopback and not api_key:
        line += " — anyone on the network can use it: set --api-key"
    return line

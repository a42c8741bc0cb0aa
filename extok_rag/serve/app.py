"""The FastAPI app: HTTP in, `ask` through the worker's continuous batch, JSON or SSE out.

    POST /ask                   ask's answer and metadata (JSON, or SSE with "stream": true)
    POST /v1/chat/completions   the same, OpenAI-compatible (chat.completion[.chunk]; chat.py)
    GET  /v1/models             the served model, for OpenAI clients that list them first
    GET  /health, GET /info     queue and reload state; `info --json`'s facts + the models

`build_app(ServeOptions(...), facts)` is `extok-rag serve`'s whole start-up (index, models,
worker, app); each Ray Serve replica runs the same from the same options
(`extok_rag/integrations/ray_serve.py`).

Glue only: retrieval and prompts are `extok_rag.ask`'s, decoding the worker's; this module
checks limits, queues the request, and turns its events into responses. A request's events are
PREPARED (retrieval and prompt done: the metadata), TOKEN pieces, then DONE; errors before
PREPARED answer with a 4xx/5xx status, errors while streaming with an error event.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from extok_rag.config import RuntimeConfig
from extok_rag.indexes import IndexSnapshot, open_index
from extok_rag.models import native
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.torch_thread import TorchThread
from extok_rag.serve.chat import add_chat_routes
from extok_rag.serve.errors import (
    error_body,
    install_handlers,
)
from extok_rag.serve.jobs import (
    DONE,
    TOKEN,
    ClientGone,
    JobEvents,
    ServeLimits,
    ServeState,
    collect,
    error_event,
    generation,
    start_answer,
)
from extok_rag.serve.schemas import (
    AskMetadata,
    AskRequest,
    AskResponse,
    ErrorBody,
    Health,
    Info,
    TokenEvent,
)
from extok_rag.serve.worker import ERROR


# -- start-up --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServeOptions:
    """What `extok-rag serve` builds its app from, as plain (picklable) values: the CLI builds
    one app from them, each Ray Serve replica its own."""

    index_dir: Path
    llm: str | None = None  # an HF causal-LM directory (None: the default SmolLM2)
    embedder: Path | None = None  # the retrieval embedder (None: all-MiniLM-L6-v2)
    tokenizer: Path | None = None  # the checkpoint that condenses long chats (None: shipped)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    limits: ServeLimits = field(default_factory=ServeLimits)
    max_queue: int = 32
    max_batch: int = 16
    api_key: str | None = None


def build_app(
    options: ServeOptions,
    facts: Callable[[Path, IndexSnapshot], dict],
    load_llm: Callable[[str | None, RuntimeConfig], FrozenLLM] = FrozenLLM.load,
    notice: Callable[[str], None] = print,
    snapshot: IndexSnapshot | None = None,
) -> tuple[FastAPI, ServeState]:
    """The served app and its state: the index opened (`snapshot`: one opened already), the
    models loaded by `load_llm` and `Embedder.load` on the thread that then decodes
    (`models.torch_thread`), the worker started."""
    if snapshot is None:
        snapshot = open_index(options.index_dir, notice=notice)
    thread = TorchThread("extok-serve-worker")
    llm = thread.call(load_llm, options.llm, options.runtime)
    native.build_in_background()  # once per machine; decoding switches to it when it lands
    embedder = thread.call(Embedder.load, options.embedder, options.runtime)
    state = ServeState.create(
        llm,
        embedder,
        options.index_dir,
        snapshot,
        facts,
        options.limits,
        options.max_queue,
        options.max_batch,
        options.tokenizer,
        notice=notice,
        thread=thread,
    )
    return create_app(state, options.api_key), state


# -- the app ---------------------------------------------------------------------------------
def create_app(state: ServeState, api_key: str | None = None) -> FastAPI:
    """The API over `state`, behind `api_key` when one is given; the worker stops when the
    app shuts down."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        state.worker.close()

    app = FastAPI(
        title="extok-rag",
        summary="RAG with Extensible Tokenization: answers from an extok index.",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
    )
    app.add_middleware(BodyLimit, max_bytes=state.limits.max_body_bytes)
    if api_key:
        app.add_middleware(ApiKey, key=api_key)  # outermost: nothing runs for a stranger
    install_handlers(app)
    add_info_routes(app, state)
    add_ask_route(app, state)
    add_chat_routes(app, state)
    return app


def add_info_routes(app: FastAPI, state: ServeState) -> None:
    @app.get("/health")
    def health() -> Health:
        """Liveness, the served index version, why a newer one is not served, the batch
        (`running`: its rows) and the queue."""
        reload, queue = state.index.status(), state.worker.stats()
        return Health(
            status="ok",
            index=str(state.index.index_dir),
            table_version=reload.table_version,
            index_updated=reload.updated,
            reloads=reload.reloads,
            reload_error=reload.error,
            **asdict(queue),
        )

    @app.get("/info")
    async def info() -> Info:
        """`extok-rag info --json` for the served snapshot, plus the models and limits."""
        return await run_in_threadpool(info_facts, state)


def info_facts(state: ServeState) -> dict:
    snapshot = state.index.current()  # a newly committed version is picked up here too
    facts = state.facts(state.index.index_dir, snapshot)
    facts["served"] = {
        "llm": state.llm.identity.to_dict(),
        "embedder": {"name": state.embedder.name, "path": str(state.embedder.path)},
        "device": str(state.llm.device),
        "max_queue": state.worker.max_queue,
        "max_batch": state.worker.max_batch,
        "limits": asdict(state.limits),
    }
    return facts


def add_ask_route(app: FastAPI, state: ServeState) -> None:
    @app.post("/ask", response_model=AskResponse)
    async def ask_route(body: AskRequest, request: Request) -> Response:
        """Answer `question` from the index (`extok-rag ask --json`). With `stream`: SSE
        `token` events ({"text"}), then one `done` event holding this response's JSON."""
        gen = generation(state, body.max_new_tokens, temperature=body.temperature)
        try:
            events, meta = await start_answer(state, request, body.question, body, gen)
            if body.stream:
                return EventSourceResponse(ask_events(events, meta, body.question), sep="\n")
            answer, _ = await collect(events)
        except ClientGone:  # nobody to answer; the job is cancelled
            return Response(status_code=499)
        return JSONResponse(ask_response(meta, body.question, answer).model_dump())


def ask_response(meta: AskMetadata, question: str, answer: str) -> AskResponse:
    return AskResponse(question=question, answer=answer.strip(), **meta.model_dump())


async def ask_events(
    events: JobEvents, meta: AskMetadata, question: str
) -> AsyncIterator[ServerSentEvent]:
    pieces: list[str] = []
    try:
        async for kind, value in events.stream():
            if kind == TOKEN:
                pieces.append(value)
                yield ServerSentEvent(data=TokenEvent(text=value).model_dump_json(), event=TOKEN)
        final = ask_response(meta, question, "".join(pieces))
        yield ServerSentEvent(data=final.model_dump_json(), event=DONE)
    except Exception as exc:  # after the 200: the error travels as an event
        yield error_event(exc, event=ERROR)


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` is refused (413): at once when its declared
    length says so, else as soon as the bytes received pass the limit (chunked bodies too).
    Pure ASGI (not BaseHTTPMiddleware), so streaming responses and disconnects pass through."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", ())).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            message = f"request body of {int(length)} bytes; at most {self.max_bytes}"
            response = JSONResponse(error_body(message, "limit_exceeded", 413), 413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI passes an HTTPException through
                    raise HTTPException(413, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)


class ApiKey:
    """ASGI middleware: every route but /health needs the key, as OpenAI clients send it
    (`Authorization: Bearer KEY`) or as `X-API-Key`; without it, 401 in the OpenAI error
    shape. Compared in constant time."""

    OPEN = frozenset({"/health"})

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    def allowed(self, headers: dict[bytes, bytes]) -> bool:
        bearer = headers.get(b"authorization", b"")
        given = bearer[7:].strip() if bearer[:7].lower() == b"bearer " else b""
        given = given or headers.get(b"x-api-key", b"")
        return hmac.compare_digest(given, self.key)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN:
            await self.app(scope, receive, send)
            return
        if not self.allowed(dict(scope.get("headers", ()))):
            body = error_body(
                "a valid API key is required (Authorization: Bearer KEY)", "invalid_api_key", 401
            )
            headers = {"WWW-Authenticate": "Bearer"}
            await JSONResponse(body, 401, headers=headers)(scope, receive, send)
            return
        await self.app(scope, receive, send)

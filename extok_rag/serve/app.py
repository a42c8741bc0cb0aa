"""The FastAPI app: HTTP in, `query.ask` through the one worker thread, JSON or SSE out.

    POST /ask                   ask's answer and metadata (JSON, or SSE with "stream": true)
    POST /v1/chat/completions   the same, OpenAI-compatible (chat.completion[.chunk])
    GET  /v1/models             the served model, for OpenAI clients that list them first
    GET  /health, GET /info     queue and reload state; `info --json`'s facts + the models

Glue only: retrieval and prompts are `extok_rag.query`'s; this module checks limits, queues
the work, and turns its events into responses. A request's work yields PREPARED (retrieval and
prompt done: the metadata), TOKEN pieces, then DONE; errors before PREPARED answer with a 4xx/5xx
status, errors while streaming with an error event.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from extok_rag.ask.answer import ask
from extok_rag.ask.budget import describe_spans
from extok_rag.ask.prompt import Prompt
from extok_rag.ask.retrieval import Retrieved, check_llm
from extok_rag.config import AskConfig, GenerationConfig
from extok_rag.errors import ExtokError
from extok_rag.indexes import IndexSnapshot
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM
from extok_rag.serve.errors import (
    RequestLimitError,
    UnknownModelError,
    describe,
    error_body,
    install_handlers,
)
from extok_rag.serve.live_index import LiveIndex
from extok_rag.serve.schemas import (
    AskMetadata,
    AskRequest,
    AskResponse,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ChunkChoice,
    ErrorBody,
    Health,
    Info,
    ModelCard,
    ModelList,
    RetrievalOptions,
    Source,
    TokenEvent,
    Usage,
)
from extok_rag.serve.worker import END, ERROR, Event, Job, ShuttingDownError, Worker

PREPARED, TOKEN, DONE = "prepared", "token", "done"
DISCONNECT_CHECK_S = 0.25  # how often a waiting request asks whether its client is still there


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; over a limit: a 4xx JSON error, before any model work."""

    max_question_chars: int = 4000  # 413 above
    max_top_n: int = 16  # 422 above
    max_new_tokens: int = 1024  # 422 above (per request)
    default_new_tokens: int = 128  # when a request gives none (ask's default)
    max_body_bytes: int = 1_000_000  # 413 above (declared Content-Length)
    preview_chars: int = 300  # source text shown per chunk


@dataclass
class ServeState:
    """Everything the app serves with: models loaded once, the live index, the worker."""

    llm: FrozenLLM
    embedder: Embedder
    index: LiveIndex
    worker: Worker
    limits: ServeLimits
    facts: Callable[[Path, IndexSnapshot], dict]  # `extok-rag info --json`'s facts

    @classmethod
    def create(
        cls,
        llm: FrozenLLM,
        embedder: Embedder,
        index_dir: Path,
        snapshot: IndexSnapshot,
        facts: Callable[[Path, IndexSnapshot], dict],
        limits: ServeLimits = ServeLimits(),
        max_queue: int = 32,
    ) -> ServeState:
        """Check the index against the LLM (as `ask` does) and start the worker."""
        check_llm(snapshot, llm)
        index = LiveIndex(index_dir, snapshot, accept=lambda s: check_llm(s, llm))
        return cls(llm, embedder, index, Worker(max_queue), limits, facts)

    @property
    def model_name(self) -> str:
        return self.llm.identity.name


class ClientGone(Exception):
    """The client disconnected while its request waited or ran."""


# -- the work run by the worker thread ---------------------------------------------------------
def answer_work(
    state: ServeState, question: str, cfg: AskConfig, gen: GenerationConfig
) -> Callable[[], Iterator[Event]]:
    """`ask` on the live index as worker events: PREPARED (metadata), TOKEN pieces, DONE
    (the tokens generated)."""

    def work() -> Iterator[Event]:
        snapshot = state.index.current()
        chunks, prompt, pieces = ask(state.llm, state.embedder, snapshot, question, cfg, gen)
        yield PREPARED, metadata(chunks, prompt, cfg, state.limits.preview_chars)
        try:
            for piece in pieces:
                yield TOKEN, piece
        finally:
            pieces.close()  # a cancelled job stops decoding here
        yield DONE, pieces.tokens

    return work


def metadata(chunks: list[Retrieved], prompt: Prompt, cfg: AskConfig, preview: int) -> AskMetadata:
    """What `ask --json` reports besides the answer, source texts cut to `preview` chars."""
    return AskMetadata(
        mode=prompt.mode,
        k=prompt.k,
        positions=prompt.positions,
        expanded=describe_spans(chunks, prompt.expanded),
        sources=[
            Source(
                doc_path=c.doc_path,
                row_id=c.row_id,
                score=c.score,
                n_tokens=c.n_tokens,
                text=c.text if len(c.text) <= preview else c.text[:preview] + "…",
            )
            for c in chunks
        ],
    )


# -- waiting for the worker ------------------------------------------------------------------
class JobEvents:
    """A job's events for the request that queued it; cancels the job when its client goes."""

    def __init__(self, job: Job, request: Request):
        self.job, self.request = job, request
        self._checked = time.monotonic()

    async def next(self) -> Event:
        """The next event (ERROR re-raised); ClientGone once the client disconnected."""
        getting = asyncio.ensure_future(self.job.next_event())
        try:
            while True:
                await self._check_client()  # at most every DISCONNECT_CHECK_S
                done, _ = await asyncio.wait({getting}, timeout=DISCONNECT_CHECK_S)
                if done:
                    kind, value = getting.result()
                    if kind == ERROR:
                        raise value
                    return kind, value
        finally:
            getting.cancel()

    async def _check_client(self) -> None:
        if time.monotonic() - self._checked < DISCONNECT_CHECK_S:
            return
        self._checked = time.monotonic()
        if await self.request.is_disconnected():
            self.job.cancel()
            raise ClientGone

    async def stream(self) -> AsyncIterator[Event]:
        """Events until DONE, for a response already streaming (sse-starlette cancels this
        generator when the client disconnects: the job is cancelled then)."""
        finished = False
        try:
            while not finished:
                kind, value = await self.job.next_event()
                if kind == ERROR:
                    raise value
                if kind == END:
                    raise ShuttingDownError("the server stopped this request")
                finished = kind == DONE
                yield kind, value
        finally:
            if not finished:
                self.job.cancel()


def check_limits(question: str, top_n: int, max_new_tokens: int, limits: ServeLimits) -> None:
    if len(question) > limits.max_question_chars:
        raise RequestLimitError(
            f"the question has {len(question)} characters; this server takes at most "
            f"{limits.max_question_chars}",
            status=413,
        )
    if not question.strip():
        raise RequestLimitError("the question is empty")
    if top_n > limits.max_top_n:
        raise RequestLimitError(f"top_n {top_n}: this server retrieves at most {limits.max_top_n}")
    if max_new_tokens > limits.max_new_tokens:
        raise RequestLimitError(
            f"max_new_tokens {max_new_tokens}: this server generates at most "
            f"{limits.max_new_tokens}"
        )


async def start_answer(
    state: ServeState,
    request: Request,
    question: str,
    options: RetrievalOptions,
    gen: GenerationConfig,
) -> tuple[JobEvents, AskMetadata]:
    """Check limits, queue the work, wait until retrieval and prompt are done (errors up to
    there raise, so they get their own status)."""
    check_limits(question, options.top_n, gen.max_new_tokens, state.limits)
    job = state.worker.submit(answer_work(state, question, options.ask_config(), gen))
    events = JobEvents(job, request)
    try:
        kind, value = await events.next()
    except BaseException:
        job.cancel()
        raise
    if kind != PREPARED:
        raise ShuttingDownError("the server stopped this request")
    return events, value


async def collect(events: JobEvents) -> tuple[str, int]:
    """The whole answer and its token count (non-streaming requests)."""
    pieces: list[str] = []
    while True:
        kind, value = await events.next()
        if kind == TOKEN:
            pieces.append(value)
        elif kind == DONE:
            return "".join(pieces), value
        elif kind == END:
            raise ShuttingDownError("the server stopped this request")


def error_event(exc: BaseException, **kwargs: Any) -> ServerSentEvent:
    return ServerSentEvent(data=ErrorBody(**describe(exc)[1]).model_dump_json(), **kwargs)


# -- the app ---------------------------------------------------------------------------------
def create_app(state: ServeState) -> FastAPI:
    """The API over `state`; the worker stops when the app shuts down."""

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
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
    )
    app.add_middleware(BodyLimit, max_bytes=state.limits.max_body_bytes)
    install_handlers(app)
    add_info_routes(app, state)
    add_ask_route(app, state)
    add_chat_routes(app, state)
    return app


def add_info_routes(app: FastAPI, state: ServeState) -> None:
    @app.get("/health")
    def health() -> Health:
        """Liveness, the served index version, why a newer one is not served, the queue."""
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
        "limits": asdict(state.limits),
    }
    return facts


def generation(state: ServeState, max_new_tokens: int | None, **kwargs: Any) -> GenerationConfig:
    return GenerationConfig(max_new_tokens or state.limits.default_new_tokens, **kwargs)


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


def add_chat_routes(app: FastAPI, state: ServeState) -> None:
    @app.get("/v1/models")
    def models() -> ModelList:
        return ModelList(data=[ModelCard(id=state.model_name)])

    @app.post("/v1/chat/completions", response_model=ChatCompletion)
    async def chat(body: ChatRequest, request: Request) -> Response:
        """OpenAI chat completions: the last user message is the question, answered from the
        index. `extok_*` fields choose retrieval; `extok` in the response carries its details."""
        if body.model is not None and body.model != state.model_name:
            raise UnknownModelError(
                f"the model {body.model!r} does not exist: this server serves "
                f"{state.model_name!r} (GET /v1/models)"
            )
        question = body.question()
        if question is None:
            raise RequestLimitError("messages hold no user message: nothing to answer")
        if body.stop:
            raise ExtokError("stop sequences are not supported")
        gen = generation(
            state,
            body.max_completion_tokens or body.max_tokens,
            temperature=body.temperature or 0.0,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
        )
        try:
            events, meta = await start_answer(state, request, question, body.retrieval(), gen)
            reply = ChatReply(state.model_name, meta, gen.max_new_tokens)
            if body.stream:
                return EventSourceResponse(reply.chunks(events), sep="\n")
            answer, tokens = await collect(events)
        except ClientGone:  # nobody to answer; the job is cancelled
            return Response(status_code=499)
        return JSONResponse(reply.completion(answer, tokens).model_dump())


class ChatReply:
    """One chat completion's identity and the OpenAI objects that carry it."""

    def __init__(self, model: str, meta: AskMetadata, max_new_tokens: int):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model, self.meta, self.max_new_tokens = model, meta, max_new_tokens

    def usage(self, tokens: int) -> Usage:
        positions = self.meta.positions
        return Usage(
            prompt_tokens=positions, completion_tokens=tokens, total_tokens=positions + tokens
        )

    def finish(self, tokens: int) -> str:
        return "length" if tokens >= self.max_new_tokens else "stop"

    def completion(self, answer: str, tokens: int) -> ChatCompletion:
        message = {"role": "assistant", "content": answer.strip()}
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChatChoice(message=message, finish_reason=self.finish(tokens))],
            usage=self.usage(tokens),
            extok=self.meta,
        )

    def chunk(self, delta: dict[str, str], **kwargs: Any) -> ServerSentEvent:
        finish = kwargs.pop("finish_reason", None)
        body = ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish)],
            **kwargs,
        )
        return ServerSentEvent(data=body.model_dump_json())

    async def chunks(self, events: JobEvents) -> AsyncIterator[ServerSentEvent]:
        """OpenAI's stream: a role chunk, a chunk per piece, a finishing chunk (with usage and
        the extok metadata), then `[DONE]`."""
        try:
            yield self.chunk({"role": "assistant", "content": ""})
            async for kind, value in events.stream():
                if kind == TOKEN:
                    yield self.chunk({"content": value})
                elif kind == DONE:
                    usage = self.usage(value)
                    yield self.chunk(
                        {}, finish_reason=self.finish(value), usage=usage, extok=self.meta
                    )
        except Exception as exc:
            yield error_event(exc)
        yield ServerSentEvent(data="[DONE]")


class BodyLimit:
    """ASGI middleware: a declared body over `max_bytes` is refused (413) before it is read.
    Pure ASGI (not BaseHTTPMiddleware), so streaming responses and disconnects pass through."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers", ())).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_bytes:
                message = f"request body of {int(length)} bytes; at most {self.max_bytes}"
                response = JSONResponse(error_body(message, "limit_exceeded", 413), 413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

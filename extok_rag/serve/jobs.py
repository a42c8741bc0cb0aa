"""The serving plumbing every route shares: the server's state and limits, the preparation a
request runs on the worker thread (retrieval and prompt, as `ask` builds them, on the live
index), and the async side that waits for its events (PREPARED with the metadata, TOKEN pieces,
DONE with the tokens generated) and notices a client that left."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from sse_starlette import ServerSentEvent

from extok_rag.ask.answer import ask
from extok_rag.ask.budget import describe_spans
from extok_rag.ask.context import load_tokenizer
from extok_rag.ask.conversation import Condenser, History, Turn, converse
from extok_rag.ask.prompt import Prompt
from extok_rag.ask.retrieval import Retrieved, check_models
from extok_rag.config import AskConfig, GenerationConfig
from extok_rag.indexes import IndexSnapshot
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.torch_thread import TorchThread
from extok_rag.serve.errors import (
    RequestLimitError,
    describe,
)
from extok_rag.serve.live_index import LiveIndex
from extok_rag.serve.schemas import (
    AskMetadata,
    ConversationInfo,
    ErrorBody,
    RetrievalOptions,
    Source,
)
from extok_rag.serve.worker import (
    DONE,
    END,
    ERROR,
    PREPARED,
    TOKEN,
    Event,
    Job,
    Prepared,
    ShuttingDownError,
    Worker,
)

DISCONNECT_CHECK_S = 0.25  # how often a waiting request asks whether its client is still there


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; over a limit: a 4xx JSON error, before any model work."""

    max_question_chars: int = 4000  # 413 above
    max_conversation_chars: int = 400_000  # a chat's messages together (~100K tokens); 413 above
    max_top_n: int = 16  # 422 above
    max_new_tokens: int = 1024  # 422 above (per request)
    default_new_tokens: int = 128  # when a request gives none (ask's default)
    max_body_bytes: int = 1_000_000  # 413 above (declared Content-Length)
    preview_chars: int = 300  # source text shown per chunk
    repeat_stop: int = 8  # GenerationConfig.repeat_stop: an answer stops at a loop (0: never)


@dataclass
class ServeState:
    """Everything the app serves with: models loaded once, the live index, the worker (its
    batch and queue)."""

    llm: FrozenLLM
    embedder: Embedder
    index: LiveIndex
    worker: Worker
    limits: ServeLimits
    facts: Callable[[Path, IndexSnapshot], dict]  # `extok-rag info --json`'s facts
    condenser: Condenser | None = None  # condenses chats that outgrow the window

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
        max_batch: int = 16,
        tokenizer: Path | None = None,
        notice: Callable[[str], None] = print,
        thread: TorchThread | None = None,
    ) -> ServeState:
        """Check the index against the LLM (as `ask` does) and start the worker. `tokenizer`:
        the checkpoint that condenses long chats (default: the shipped one for this LLM),
        loaded when a chat first needs it. `thread`: the one that loaded the models (the
        worker's loop runs on it, `models.torch_thread`)."""
        check_models(snapshot, llm, embedder)  # at start, and on every reload
        index = LiveIndex(index_dir, snapshot, accept=lambda s: check_models(s, llm, embedder))
        worker = Worker(llm, max_queue, max_batch, thread)
        condenser = Condenser(lambda: load_tokenizer(llm, tokenizer, notice))
        return cls(llm, embedder, index, worker, limits, facts, condenser)

    @property
    def model_name(self) -> str:
        return self.llm.identity.name


class ClientGone(Exception):
    """The client disconnected while its request waited or ran."""


# -- the work run by the worker thread ---------------------------------------------------------
def answer_job(
    state: ServeState,
    question: str,
    cfg: AskConfig,
    gen: GenerationConfig,
    turns: Sequence[Turn] | None = None,
) -> Callable[[], Prepared]:
    """`ask`'s retrieval and prompt on the live index, run by the worker when the request joins
    the batch; the worker then decodes `prompt.row` with `gen`, as `ask`'s stream would. With
    `turns` (a chat), the whole conversation is read, its last user message the question."""

    def prepare() -> Prepared:
        snapshot = state.index.current()
        if turns is None:
            chunks, prompt, _ = ask(state.llm, state.embedder, snapshot, question, cfg, gen)
            history = None
            # `ask`'s answer stream is lazy and never started: the batch decodes the row instead
        else:
            chunks, prompt, history = converse(
                state.llm, state.embedder, snapshot, turns, cfg, gen, state.condenser
            )
        meta = metadata(chunks, prompt, state.limits.preview_chars, history)
        return Prepared(meta, prompt.row, gen)

    return prepare


def metadata(
    chunks: list[Retrieved], prompt: Prompt, preview: int, history: History | None = None
) -> AskMetadata:
    """What `ask --json` reports besides the answer, source texts cut to `preview` chars; for
    a chat, how its earlier turns were read."""
    return AskMetadata(
        conversation=None if history is None else ConversationInfo(**history.describe()),
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
    turns: Sequence[Turn] | None = None,
) -> tuple[JobEvents, AskMetadata]:
    """Check limits, queue the request, wait until retrieval and prompt are done (errors up to
    there raise, so they get their own status). `turns`: a chat's messages, read whole."""
    check_limits(question, options.top_n, gen.max_new_tokens, state.limits)
    chars = sum(len(t.text) for t in turns or ())
    if chars > state.limits.max_conversation_chars:
        raise RequestLimitError(
            f"the messages hold {chars} characters; this server reads at most "
            f"{state.limits.max_conversation_chars} per conversation",
            status=413,
        )
    job = state.worker.submit(answer_job(state, question, options.ask_config(), gen, turns))
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


def generation(state: ServeState, max_new_tokens: int | None, **kwargs: Any) -> GenerationConfig:
    limits = state.limits
    new_tokens = max_new_tokens or limits.default_new_tokens
    return GenerationConfig(new_tokens, repeat_stop=limits.repeat_stop, **kwargs)

"""OpenAI-compatible routes: `POST /v1/chat/completions` (chat.completion and, streamed,
chat.completion.chunk events) and `GET /v1/models`. The whole conversation is read through the
chat template (`ask.conversation`); its last message, the user's, is answered from the index as
`/ask` answers it; `extok_*` fields choose retrieval, and `extok` in the response carries its
details."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from extok_rag.errors import ExtokError
from extok_rag.serve.errors import (
    RequestLimitError,
    UnknownModelError,
)
from extok_rag.serve.jobs import (
    DONE,
    TOKEN,
    ClientGone,
    JobEvents,
    ServeState,
    collect,
    error_event,
    generation,
    start_answer,
)
from extok_rag.serve.schemas import (
    AskMetadata,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ChunkChoice,
    ModelCard,
    ModelList,
    Usage,
)


def add_chat_routes(app: FastAPI, state: ServeState) -> None:
    @app.get("/v1/models")
    def models() -> ModelList:
        return ModelList(data=[ModelCard(id=state.model_name)])

    @app.post("/v1/chat/completions", response_model=ChatCompletion)
    async def chat(body: ChatRequest, request: Request) -> Response:
        """OpenAI chat completions: the whole conversation is read; its last message, the
        user's, is answered from the index. Earlier turns that outgrow the window are
        condensed, oldest first. `extok_*` fields choose retrieval; `extok` in the response
        carries its details (`extok.conversation`: how the earlier turns were read)."""
        if body.model is not None and body.model != state.model_name:
            raise UnknownModelError(
                f"the model {body.model!r} does not exist: this server serves "
                f"{state.model_name!r} (GET /v1/models)"
            )
        question = body.question()
        if question is None:
            raise RequestLimitError("the last message must be the user's: nothing to answer")
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
            events, meta = await start_answer(
                state, request, question, body.retrieval(), gen, body.turns()
            )
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
        positions, history = self.meta.positions, self.meta.conversation
        return Usage(
            prompt_tokens=positions,
            completion_tokens=tokens,
            total_tokens=positions + tokens,
            condensed_tokens=history.condensed_tokens if history else 0,
            condensed_k=history.k if history else None,  # None unless turns were condensed
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

"""Request and response models of the HTTP API: they are its documentation (FastAPI shows them
at /docs and in /openapi.json). Retrieval defaults are `ask`'s (`AskConfig`); limits that
depend on the server's options are checked in `app.py`, not here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from extok_rag.ask.conversation import Turn
from extok_rag.ask.modes import MODES
from extok_rag.config import RETRIEVAL_HELP, RETRIEVERS, SCORERS, AskConfig

_ASK = AskConfig()
SYSTEM_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
Auto = Literal["auto"]
AskMode = Literal[tuple(MODES)]  # type: ignore[valid-type]  # the one list of modes
SpanScorer = Literal[SCORERS]  # type: ignore[valid-type]
Retrieval = Literal[RETRIEVERS]  # type: ignore[valid-type]


class RetrievalOptions(BaseModel):
    """How retrieved chunks reach the LLM: `extok-rag ask`'s options, same defaults."""

    mode: AskMode = Field(_ASK.mode, description="; ".join(f"{m}: {h}" for m, h in MODES.items()))
    top_n: PositiveInt = Field(_ASK.top_n, description="Chunks to retrieve.")
    k: PositiveInt | Auto = Field("auto", description="Down-scaling factor, or 'auto'.")
    budget: PositiveInt | Auto = Field(
        "auto", description="auto/expand/spans/truncated: prompt positions, or 'auto'."
    )
    scorer: SpanScorer = Field(_ASK.scorer, description="expand/spans: how spans are scored.")
    retrieval: Retrieval = Field(_ASK.retrieval, description=RETRIEVAL_HELP + ".")
    source_lines: bool = Field(False, description="Head each chunk with its file path (raw).")

    def ask_config(self) -> AskConfig:
        return AskConfig(
            top_n=self.top_n,
            k=None if self.k == "auto" else self.k,
            mode=self.mode,
            source_lines=self.source_lines,
            budget=None if self.budget == "auto" else self.budget,
            scorer=self.scorer,
            retrieval=self.retrieval,
        )


class AskRequest(RetrievalOptions):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    max_new_tokens: PositiveInt | None = Field(None, description="Default: the server's.")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy.")
    stream: bool = Field(False, description="Server-sent events: token events, then done.")


class Source(BaseModel):
    doc_path: str
    row_id: int
    score: float
    n_tokens: int
    text: str = Field(description="The chunk's text, cut to the server's preview length.")


class ExpandedSpan(BaseModel):
    doc_path: str
    row_id: int
    tokens: list[int]
    score: float
    text: str


class ConversationInfo(BaseModel):
    """How a chat's earlier messages were read (`ask.conversation`): raw while they fit, the
    oldest condensed into extensible embeddings when they outgrow the window."""

    turns: int = Field(description="Earlier user and assistant messages read.")
    history_positions: int = Field(description="Positions they take (system prompt included).")
    condensed_turns: int = Field(description="The oldest messages, condensed.")
    condensed_tokens: int = Field(description="Their raw tokens.")
    condensed_positions: int = Field(description="The positions those tokens became.")
    k: int | None = Field(description="The down-scaling factor they were condensed at.")


class AskMetadata(BaseModel):
    """What `ask --json` reports besides the answer."""

    mode: AskMode = Field(description="The mode that built the prompt (auto: the one it chose).")
    k: int | None = Field(description="k of the compressed chunks (None: none compressed).")
    positions: int = Field(description="Positions the prompt takes in the LLM window.")
    expanded: list[ExpandedSpan] = Field(description="expand/spans: the spans read raw.")
    sources: list[Source]
    conversation: ConversationInfo | None = Field(
        None, description="/v1/chat/completions: how the earlier messages were read."
    )


class AskResponse(AskMetadata):
    question: str
    answer: str


class TokenEvent(BaseModel):
    """`event: token` of a streamed /ask."""

    text: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class ErrorBody(BaseModel):
    """Every error, on every route (the shape OpenAI clients parse)."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]
    index: str
    table_version: int | None
    index_updated: str
    reloads: int
    reload_error: str | None
    waiting: int = Field(description="Requests waiting for a place in the batch.")
    running: int = Field(description="Requests in the batch (decoding, or being prepared).")
    max_queue: int
    max_batch: int
    served: int
    cancelled: int


# -- OpenAI chat completions -----------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "\n".join(p.text for p in self.content if p.type == "text" and p.text)


class ChatRequest(BaseModel):
    """OpenAI's chat-completions body. The whole conversation is read through the chat
    template: system (or developer) messages, every turn, and the last message, the user's
    question, answered from the index as `ask` answers it. Earlier turns that outgrow the
    window are condensed into extensible embeddings, oldest first (`extok.conversation`).
    Unknown OpenAI fields are ignored; `extok_*` fields choose retrieval (defaults: `ask`'s)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    temperature: float | None = Field(None, ge=0.0, description="Default 0 (greedy), as ask.")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="One choice only.")
    stop: str | list[str] | None = None
    extok_mode: AskMode = _ASK.mode
    extok_top_n: PositiveInt = _ASK.top_n
    extok_k: PositiveInt | Auto = "auto"
    extok_budget: PositiveInt | Auto = "auto"
    extok_scorer: SpanScorer = _ASK.scorer
    extok_retrieval: Retrieval = _ASK.retrieval
    extok_source_lines: bool = False

    def retrieval(self) -> RetrievalOptions:
        return RetrievalOptions(
            mode=self.extok_mode,
            top_n=self.extok_top_n,
            k=self.extok_k,
            budget=self.extok_budget,
            scorer=self.extok_scorer,
            retrieval=self.extok_retrieval,
            source_lines=self.extok_source_lines,
        )

    def question(self) -> str | None:
        """The last message's text when it is the user's, else None."""
        last = self.messages[-1]
        return last.text() if last.role == "user" else None

    def turns(self) -> list[Turn]:
        """The messages as the conversation reader takes them ("developer" is "system")."""
        return [Turn(SYSTEM_ALIASES.get(m.role, m.role), m.text()) for m in self.messages]


class ChatChoice(BaseModel):
    index: int = 0
    message: dict[str, str]
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int = Field(
        description="Prompt positions (compressed chunks and condensed turns count k-fold less)."
    )
    completion_tokens: int
    total_tokens: int
    condensed_tokens: int = Field(0, description="Raw tokens of earlier turns condensed.")
    condensed_k: int | None = Field(None, description="The k they were condensed at.")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    extok: AskMetadata = Field(description="Retrieval details (not in OpenAI's schema).")


class ChunkChoice(BaseModel):
    index: int = 0
    delta: dict[str, str]
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    extok: AskMetadata | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "extok-rag"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


Info = dict[str, Any]  # `extok-rag info --json`'s object, plus the loaded models

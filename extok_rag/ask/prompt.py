"""A prompt request (the question, its retrieved chunks and the options) and the prompt it
becomes: the chat row in the ask frame, the k it read chunks at, and the positions it takes.

    raw, compressed, hybrid        Question: {q}\n\nContext:\n [source line][chunk]\n\n …
    (standard frame)               Answer the question: {q}
    expand, spans, truncated       [empty system message] Context:\n [source line][chunk]
    (light frame)                  \n\n … \n\nQuestion: {q}

A chunk reaches the frame as raw text, extensible embeddings (m, d), or both in document order
(`models.ask_frame`: the standard frame is the one the tokenizer is trained in; the budget
modes read the light one, the question once and a slot only for each chunk read, unless
`AskConfig.frame` is "standard").
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch

from extok_rag.ask.retrieval import Retrieved
from extok_rag.config import FRAMES, AskConfig
from extok_rag.errors import InputTooLongError
from extok_rag.models.ask_frame import Part, ask_frame, light_frame
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM, Message
from extok_rag.models.mixed_input import Row, row_length
from extok_rag.spans import Span

Frame = Callable[[str, Sequence, Sequence[str] | None], list[Part]]  # (q, contexts, headers)
BUDGET_FRAMES: dict[str, Frame] = {"light": light_frame, "standard": ask_frame}
assert BUDGET_FRAMES.keys() == set(FRAMES), "one frame function per AskConfig.frame"


# An empty system message: in SmolLM2's template, 16 positions fewer than its default one ("You
# are a helpful AI assistant named SmolLM, trained by Hugging Face"), which carries nothing for
# the answer (500 span-probe questions, `spans` in the light frame: with it empty, 66 answered
# that the default missed, 50 missed that it answered).
NO_SYSTEM = Message("system", [""])
_SHORTER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> bool


def empty_system_is_shorter(llm: FrozenLLM) -> bool:
    """Whether the LLM's chat template takes fewer positions with an empty system message than
    with none (it then adds a default one); measured once per tokenizer (its template)."""
    if llm.tokenizer not in _SHORTER:
        user = Message("user", [""])
        empty = row_length(llm.messages_row([NO_SYSTEM, user]))
        _SHORTER[llm.tokenizer] = empty < row_length(llm.messages_row([user]))
    return _SHORTER[llm.tokenizer]


@dataclass
class Prompt:
    row: Row
    k: int | None  # the k used for compressed chunks (None when none is compressed)
    positions: int  # positions the prompt takes in the LLM window
    expanded: list[Span] = field(default_factory=list)  # expand / spans: the spans read raw
    chunks_read: int | None = None  # budget modes: the retrieved chunks read (the rest did not fit)
    mode: str = ""  # the mode that built it (auto: the one it chose)


@dataclass(frozen=True)
class PromptRequest:
    """What a prompt builder reads: `reserve` positions stay free for the answer; the
    retrieval `embedder` scores spans in the budget modes."""

    llm: FrozenLLM
    question: str
    chunks: Sequence[Retrieved]
    cfg: AskConfig
    stride: int
    reserve: int
    embedder: Embedder | None = None
    history: Sequence[Message] = ()  # earlier chat messages, rendered before the question's turn

    @property
    def budget(self) -> int:
        """Positions the whole prompt may take: `--budget`, else the window less the answer."""
        if self.cfg.budget is not None:
            return self.cfg.budget
        return self.llm.max_positions - self.reserve

    @property
    def headers(self) -> list[str] | None:
        """One raw source line per chunk (`--source-lines`), else None."""
        return [f"[{c.doc_path}]\n" for c in self.chunks] if self.cfg.source_lines else None

    def row(self, contexts: Sequence, headers: Sequence[str] | None = None) -> Row:
        """The chat row: the history, then the question's turn in the ask frame."""
        return self.llm.chat_row(ask_frame(self.question, contexts, headers), history=self.history)

    def budget_row(self, read: Sequence[int], contexts: Sequence) -> Row:
        """The budget modes' chat row: the history, then the question's turn in the budget
        frame (`cfg.frame`), `contexts[j]` being retrieved chunk `read[j]`: text, embeddings
        (m, d), or a list of both in document order (with its header line under
        --source-lines). The light frame leaves out the template's default system prompt."""
        headers = self.headers
        kept = [headers[i] for i in read] if headers else None
        user = Message("user", BUDGET_FRAMES[self.cfg.frame](self.question, contexts, kept))
        head = [NO_SYSTEM] if self.drops_default_system else []
        return self.llm.messages_row([*head, *self.history, user])

    @property
    def drops_default_system(self) -> bool:
        """The light frame, no system message of the history's own, and a template that adds
        a longer default one when given none."""
        own = any(m.role == "system" for m in self.history)
        return self.cfg.frame == "light" and not own and empty_system_is_shorter(self.llm)

    def frame_positions(self, read: Collection[int], offered: int) -> int:
        """Positions of the budget frame (and the history) around the content of the chunks
        `read` (indices into `chunks`) when the builder offers the first `offered` chunks: the
        light frame holds a slot for each chunk read; the standard frame one for each chunk
        offered, read or not (as every budget prompt did before the light frame)."""
        slots = sorted(read) if self.cfg.frame == "light" else range(offered)
        empty = torch.zeros(0, self.llm.hidden_size)  # an empty context: the frame alone
        return row_length(self.budget_row(slots, [empty] * len(slots)))


def question_only(req: PromptRequest) -> Prompt:
    """The frame and the question alone, within the budget: what the budget modes read when
    not even one chunk compressed at the largest k fits."""
    row = req.row([])
    if row_length(row) > req.budget:
        raise InputTooLongError(
            f"a budget of {req.budget} positions does not hold the prompt frame and the "
            f"question ({row_length(row)} positions): raise --budget"
        )
    return Prompt(row, None, row_length(row), chunks_read=0)

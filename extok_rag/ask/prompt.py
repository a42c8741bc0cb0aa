"""A prompt request (the question, its retrieved chunks and the options) and the prompt it
becomes: the chat row in the ask frame, the k it read chunks at, and the positions it takes.

    Question: {q}\n\nContext:\n [source line][chunk]\n\n … Answer the question: {q}

A chunk reaches the frame as raw text, extensible embeddings (m, d), or both in document order
(`models.ask_frame`, the frame the tokenizer is trained in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from extok_rag.ask.retrieval import Retrieved
from extok_rag.config import AskConfig
from extok_rag.errors import InputTooLongError
from extok_rag.models.ask_frame import ask_frame
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM, Message
from extok_rag.models.mixed_input import Row, row_length
from extok_rag.spans import Span


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

    def frame_positions(self, n_chunks: int, headers: Sequence[str] | None) -> int:
        return frame_positions(self.llm, self.question, n_chunks, headers, self.history)


def frame_positions(
    llm: FrozenLLM, question: str, n_chunks: int, headers, history: Sequence[Message] = ()
) -> int:
    """Positions of the prompt with `n_chunks` empty contexts: the frame (and the history)
    every mode pays."""
    empty = torch.zeros(0, llm.hidden_size)  # an empty context: the frame is tokenised as is
    frame = ask_frame(question, [empty] * n_chunks, headers)
    return row_length(llm.chat_row(frame, history=history))


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

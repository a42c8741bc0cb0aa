"""The prompt frames of `ask`: the user turn that holds the question and the retrieved context.

    standard  Question: {q}\n\nContext:\n [header][chunk]\n\n … Answer the question: {q}
    light     Context:\n [header][chunk] \n\n [header][chunk] … \n\nQuestion: {q}

A chunk is raw text or extensible embeddings (m, d). The standard frame is the one the
tokenizer is trained in: the ask path's raw, compressed and hybrid prompts, the trainer's
QA-frame objectives and the answer probe all build their prompts with `ask_frame`, so training
sees exactly what users' questions see. The light frame is the budget modes' (expand, spans,
truncated): under a budget of positions every position the frame takes is one less for the
context, so it asks the question once and holds only the chunks read (and `ask.prompt` renders
it without the chat template's default system prompt).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Part = str | torch.Tensor


def ask_frame(
    question: str, contexts: Sequence[Part | Sequence[Part]], headers: Sequence[str] | None = None
) -> list[Part]:
    """The user turn: the question, each context chunk (with an optional raw header line),
    the question again. No contexts: the question alone (no retrieval). A chunk is one part,
    or a list of parts in document order (expanded spans between compressed runs).

    Question-first framing: on the sample corpus SmolLM2-135M answered 2 of 4 questions with it
    and 0 of 4 with an instruction + context-first prompt, which it mostly continued.
    """
    if not contexts:
        return [question]
    parts: list[Part] = [f"Question: {question}\n\nContext:\n"]
    for i, context in enumerate(contexts):
        pieces = list(context) if isinstance(context, list | tuple) else [context]
        parts += [headers[i] if headers else "", *pieces, "\n\n"]
    parts.append(f"Answer the question: {question}")
    return merge_text(parts)


def light_frame(
    question: str, contexts: Sequence[Part | Sequence[Part]], headers: Sequence[str] | None = None
) -> list[Part]:
    """The budget modes' user turn: the chunks read (each with an optional raw header line), a
    blank line between two, then the question once. No contexts: the question alone, as in
    `ask_frame`. A chunk is one part (text, or embeddings (m, d)) or a list of parts in
    document order, as in `ask_frame`.

    Question last: on 500 span-probe questions (in no eval draw; `spans` at 0.25 and 0.35 of
    raw's positions) SmolLM2 answered 108 that question-first missed and missed 68 that it
    answered (sign test p = 0.003); question-first once was below the standard frame too.
    """
    if not contexts:
        return [question]
    parts: list[Part] = ["Context:\n"]
    for i, context in enumerate(contexts):
        pieces = list(context) if isinstance(context, list | tuple) else [context]
        parts += ["\n\n" if i else "", headers[i] if headers else "", *pieces]
    parts.append(f"\n\nQuestion: {question}")
    return merge_text(parts)


def merge_text(parts: Sequence[Part]) -> list[Part]:
    """Join neighbouring strings and drop empty ones."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        elif not (isinstance(part, str) and not part):
            out.append(part)
    return out

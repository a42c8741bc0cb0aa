"""The prompt frame of `ask`: the user turn that holds the question and the retrieved context.

    Question: {q}\n\nContext:\n [header][chunk]\n\n … Answer the question: {q}

A chunk is raw text or extensible embeddings (m, d). `query.user_parts` (the ask path), the
trainer's QA-frame objectives and the answer probe all build their prompts here, so training
sees exactly what users' questions see.
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


def merge_text(parts: Sequence[Part]) -> list[Part]:
    """Join neighbouring strings and drop empty ones."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        elif not (isinstance(part, str) and not part):
            out.append(part)
    return out

"""Frame objectives: compressed paragraphs inside the exact `ask` prompt, loss on the answer.

Every example is (context paragraphs, question, answer). Its row is the chat prompt that `ask`
builds (`models.ask_frame` + the chat template), with each paragraph as extensible embeddings
at k, then the answer's tokens, the only scored ones:

    <|im_start|>user  Question: q  Context: [et(p1)] [et(p2)]  Answer the question: q
    <|im_end|> <|im_start|>assistant  ANSWER TOKENS (scored)

Example makers, one per objective (all seeded by the caller's `random.Random`):
    qa              a QA pair: gold paragraphs + distractors, shuffled; the gold answer
    span            a sentence of a paragraph with an entity / number / noun phrase blanked,
                    asked as "Fill in the blank"; the span
    reconstruction  "Repeat the context word for word."; the paragraphs' own text
`distill` reads qa examples twice: raw paragraphs (teacher) and compressed (student); `expand`
reads them as `ask --mode expand` does (best-matching sentences raw, the rest compressed). With
a contrast weight, qa and expand also read each question over another example's paragraphs
(`rotated`) and with none (`bare_rows`).
"""

from __future__ import annotations

import functools
import itertools
import random
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from extok_rag.config import DownscaleMethod
from extok_rag.datasets.training_files import (
    PARAGRAPHS_TRAIN_FILE,
    QA_TRAIN_FILE,
    QAExample,
    read_jsonl,
    read_qa_examples,
)
from extok_rag.models.ask_frame import ask_frame
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import Row, TokenSegment
from extok_rag.spans import Span, chunk_parts, chunk_spans, score_spans, token_starts

RECONSTRUCT = "Repeat the context word for word."
BLANK = "_____"


@dataclass(frozen=True)
class FrameExample:
    contexts: tuple[str, ...]  # paragraphs, compressed in the row (raw for a teacher)
    question: str
    answer: str


@dataclass
class FrameData:
    """What frame objectives draw from: QA pairs and plain paragraphs (train split only)."""

    qa: list[QAExample]
    paragraphs: list[str]

    @classmethod
    def load(cls, folder: Path, need_qa: bool = True, need_paragraphs: bool = True):
        """From a prepared training-data folder (`data prepare`'s JSON-lines files)."""
        qa = read_qa_examples(folder / QA_TRAIN_FILE) if need_qa else []
        paragraphs = (
            [r["text"] for r in read_jsonl(folder / PARAGRAPHS_TRAIN_FILE)]
            if need_paragraphs
            else []
        )
        return cls(qa, paragraphs)


# -- example makers ---------------------------------------------------------------------------
def qa_example(pair: QAExample, rng: random.Random, distractors: int) -> FrameExample:
    n = min(distractors, len(pair.distractors))
    contexts = list(pair.gold) + rng.sample(pair.distractors, n)
    rng.shuffle(contexts)
    return FrameExample(tuple(contexts), pair.question, pair.answer)


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_NUMBER = re.compile(r"\b\d[\d,.:/-]*\d\b|\b\d\b")
_NAME = re.compile(r"[A-Z][\w'’-]+(?:\s+(?:of|the|de|von|van|and|for)?\s*[A-Z][\w'’-]+)*")
_WORD = re.compile(r"[A-Za-z][a-z'’-]{3,}")
_STOP = frozenset(
    re.findall(
        r"\w+",
        "this that with from have which their there they were been would could should about "
        "these those also into than then them when where what while other such only some more "
        "most very will shall your each after before over under",
    )
)


def span_candidates(sentence: str) -> list[tuple[int, int]]:
    """Spans worth recalling in a sentence, as (start, end) character offsets: numbers, names
    (capitalised runs, not the sentence's first word alone), else content-word pairs."""
    found = [m.span() for m in _NUMBER.finditer(sentence)]
    found += [m.span() for m in _NAME.finditer(sentence) if m.start() > 0 or " " in m.group()]
    if not found:
        words = [m for m in _WORD.finditer(sentence) if m.group().lower() not in _STOP]
        pairs = itertools.pairwise(words)
        found = [(a.start(), b.end()) for a, b in pairs if sentence[a.end() : b.start()] == " "]
    return [(a, b) for a, b in found if 2 <= b - a <= 60]


def span_example(paragraph: str, rng: random.Random) -> FrameExample | None:
    """A "fill in the blank" question on one sentence of `paragraph` (None if none fits)."""
    sentences = [s for s in _SENTENCE.split(paragraph) if 20 <= len(s) <= 400]
    rng.shuffle(sentences)
    for sentence in sentences:
        spans = span_candidates(sentence)
        if spans:
            a, b = rng.choice(spans)
            blanked = sentence[:a] + BLANK + sentence[b:]
            question = f'Fill in the blank: "{blanked.strip()}"'
            return FrameExample((paragraph,), question, sentence[a:b])
    return None


def reconstruction_example(paragraphs: Sequence[str]) -> FrameExample:
    return FrameExample(tuple(paragraphs), RECONSTRUCT, "\n\n".join(paragraphs))


# -- token ids, once per text ------------------------------------------------------------------
CACHED_TEXTS = 50_000  # texts whose tokens a process keeps (the oldest go first)


@dataclass
class TextTokens:
    """What frame rows need of one text cut to `max_tokens`: its ids, the text cut there
    (itself when it fits), and for expand rows the ids decoded back and where each token
    starts in that (`spans.token_starts`)."""

    ids: torch.Tensor  # (n,) long, n <= max_tokens
    text: str
    decoded: str | None = field(default=None, repr=False)
    starts: np.ndarray | None = field(default=None, repr=False)  # (n + 1,) characters


_CACHES: weakref.WeakKeyDictionary[object, dict[tuple[str, int], TextTokens]] = (
    weakref.WeakKeyDictionary()
)


def text_tokens(llm: FrozenLLM, text: str, max_tokens: int, starts: bool = False) -> TextTokens:
    """`text` cut to its first `max_tokens` tokens, tokenised once per process: QA contexts
    and paragraphs come back step after step, and tokenising them (ids, then offsets) was 0.23
    of 0.34 s building 64 expand rows (a profile, this CPU). Callers must not modify `ids`."""
    cache = _CACHES.setdefault(llm.tokenizer, {})
    key = (text, max_tokens)
    got = cache.get(key)
    if got is None:
        ids = llm.tokenize(text)
        cut = text if ids.numel() <= max_tokens else llm.tokenizer.decode(ids[:max_tokens].tolist())
        got = TextTokens(ids[:max_tokens].clone(), cut)  # not a view of all the ids
        if len(cache) >= CACHED_TEXTS:
            del cache[next(iter(cache))]
        cache[key] = got
    if starts and got.starts is None:
        got.decoded = llm.tokenizer.decode(got.ids.tolist())
        got.starts = token_starts(llm.tokenizer, got.decoded, len(got.ids))
    return got


def truncate_text(llm: FrozenLLM, text: str, max_tokens: int) -> str:
    """`text` cut to its first `max_tokens` tokens (decoded back), as a chunk of the index is."""
    return text_tokens(llm, text, max_tokens).text


# -- rows -------------------------------------------------------------------------------------
def compress_texts(
    llm: FrozenLLM,
    tokenizer: ExtensibleTokenizer,
    texts: Sequence[str],
    ks: Sequence[int],
    max_tokens: int,
    method: DownscaleMethod = "strided",
) -> list[torch.Tensor]:
    """Each text's first `max_tokens` tokens, encoded on its own (one padded batch) and
    down-scaled by its k: (ceil(L_i / k_i), d) each."""
    states = encode_texts(llm, tokenizer, texts, max_tokens)
    return tokenizer.downscale_each([states[t] for t in texts], ks, method)


def encode_texts(
    llm: FrozenLLM, tokenizer: ExtensibleTokenizer, texts: Sequence[str], max_tokens: int
) -> dict[str, torch.Tensor]:
    """Each distinct text's states, (L, d), encoded once: a contrast batch reads every
    paragraph twice (its own question's row and another's)."""
    distinct = list(dict.fromkeys(texts))
    ids = [text_tokens(llm, t, max_tokens).ids for t in distinct]
    return dict(zip(distinct, tokenizer.encode(ids), strict=True))


def answer_row(llm: FrozenLLM, user: Sequence[str | torch.Tensor], answer: str) -> Row:
    """The chat prompt (unscored) followed by the answer's tokens (scored)."""
    prompt = [
        replace(s, scored=False) if isinstance(s, TokenSegment) else s for s in llm.chat_row(user)
    ]
    return [*prompt, TokenSegment(llm.tokenize(answer))]


def frame_users(
    llm: FrozenLLM,
    examples: Sequence[FrameExample],
    max_tokens: int,
    tokenizer: ExtensibleTokenizer | None = None,
    ks: Sequence[int] = (),
    method: DownscaleMethod = "strided",
) -> list[list[str | torch.Tensor]]:
    """Each example's user turn (`ask_frame`): its contexts compressed by its k (with a
    `tokenizer`; one batched encode for all), as raw text cut to `max_tokens` (without one),
    or left out (`max_tokens` 0: the question alone, as `ask --mode none`)."""
    if not max_tokens:
        return [ask_frame(ex.question, []) for ex in examples]
    if tokenizer is None:
        return [
            ask_frame(ex.question, [truncate_text(llm, c, max_tokens) for c in ex.contexts])
            for ex in examples
        ]
    texts = [c for ex in examples for c in ex.contexts]
    kk = [k for ex, k in zip(examples, ks, strict=True) for _ in ex.contexts]
    embeds = iter(compress_texts(llm, tokenizer, texts, kk, max_tokens, method))
    return [ask_frame(ex.question, [next(embeds) for _ in ex.contexts]) for ex in examples]


def answer_rows(
    llm: FrozenLLM, examples: Sequence[FrameExample], users: Sequence[Sequence]
) -> list[Row]:
    return [answer_row(llm, user, ex.answer) for ex, user in zip(examples, users, strict=True)]


def compressed_rows(
    llm: FrozenLLM,
    tokenizer: ExtensibleTokenizer,
    examples: Sequence[FrameExample],
    ks: Sequence[int],
    max_tokens: int,
    method: DownscaleMethod = "strided",
) -> list[Row]:
    """One row per example, its contexts compressed by the example's k."""
    return answer_rows(llm, examples, frame_users(llm, examples, max_tokens, tokenizer, ks, method))


def expand_rows(
    llm: FrozenLLM,
    tokenizer: ExtensibleTokenizer,
    examples: Sequence[FrameExample],
    ks: Sequence[int],
    shares: Sequence[float],
    max_tokens: int,
    method: DownscaleMethod = "strided",
) -> list[Row]:
    """One row per example in the frame `ask --mode expand` serves: each paragraph cut into
    sentence spans (`expansion.chunk_spans`), the spans that best match the question
    (lexical score, over all the example's paragraphs) read raw until `share` of its context
    tokens are, the rest of each paragraph compressed by the example's k in document order."""
    cut = [[text_tokens(llm, c, max_tokens, starts=True) for c in ex.contexts] for ex in examples]
    states = encode_texts(llm, tokenizer, [c for ex in examples for c in ex.contexts], max_tokens)
    # the tokenizer's own down-scale: a learned one (query pooling) reads the chunk before a run
    pooling = functools.partial(tokenizer.downscale_from, method=method)
    users = []
    for ex, row, k, share in zip(examples, cut, ks, shares, strict=True):
        spans = [chunk_spans(i, c.decoded, c.starts, 1) for i, c in enumerate(row)]
        raw = pick_spans(ex.question, [s for chunk in spans for s in chunk], share)
        contexts = [
            chunk_parts(
                states[text],
                chunk,
                {(s.start, s.end) for s in chunk if (s.chunk, s.start, s.end) in raw},
                k,
                1,
                pooling,
            )
            for text, chunk in zip(ex.contexts, spans, strict=True)
        ]
        users.append(ask_frame(ex.question, contexts))
    return answer_rows(llm, examples, users)


def rotated(examples: Sequence[FrameExample]) -> list[FrameExample]:
    """Each example's question and answer over the next example's paragraphs (the last over
    the first's): the contrast rows, where a gain cannot come from what the paragraphs say."""
    n = len(examples)
    return [replace(ex, contexts=examples[(i + 1) % n].contexts) for i, ex in enumerate(examples)]


def pick_spans(question: str, spans: Sequence[Span], share: float) -> set[tuple[int, int, int]]:
    """(chunk, start, end) of the best spans by lexical score while their tokens stay within
    `share` of all."""
    budget = share * sum(s.end - s.start for s in spans)
    chosen: set[tuple[int, int, int]] = set()
    used = 0
    for span in sorted(score_spans("lexical", None, question, spans), key=lambda s: -s.score):
        if used + span.end - span.start <= budget:
            chosen.add((span.chunk, span.start, span.end))
            used += span.end - span.start
    return chosen


def raw_rows(llm: FrozenLLM, examples: Sequence[FrameExample], max_tokens: int) -> list[Row]:
    """One row per example with its contexts as raw text (cut to `max_tokens` each)."""
    return answer_rows(llm, examples, frame_users(llm, examples, max_tokens))


def bare_rows(llm: FrozenLLM, examples: Sequence[FrameExample]) -> list[Row]:
    """One row per example with no context (the question alone, as `ask --mode none`)."""
    return answer_rows(llm, examples, frame_users(llm, examples, 0))

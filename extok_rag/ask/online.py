"""Online reading (Extensible Tokenization, arXiv 2401.07793, §3 "online", Table 3): a long
token stream read in sessions over one KV cache of the frozen LLM.

    cache   [opening][et(s_1)] … [et(s_i-1)] [raw s_i: read against the cache, then dropped]
    pos     0 ……………………………………………… P-1  P ………………… P+L-1
    then    s_i condensed by the extensible tokenizer at k: et(s_i) (ceil(L/k), d) appended
            at positions P … P+ceil(L/k)-1, so the next session reads it in place of s_i

Why a cache and not a prompt rebuilt per session: each session costs one forward over its L
raw tokens (only when they are scored) and one over its ceil(L/k) embeddings, both against the
cached history, so reading n tokens costs O(n) forward positions, and the cache only ever holds
the condensed history: memory grows by L/k per session, never by the raw L. Nothing is
recomputed from the start. The embeddings of consecutive sessions wait (pending) until
`append_positions` of them run in one forward, or until the cache is read (`flush`): a
forward's fixed costs, and the copy of the whole cache each forward makes, are paid once for
eight sessions at ×8 (measured: 70 against 120 ms a session at 4K, 122 against 224 at 32K).
k is fixed, or "auto": the smallest of `config.k_choices` whose condensed history, plus one
raw session plus the question and the answer, fits the LLM window.

The prompt frame. `ask` reads "Question: q\\n\\nContext:\\n [chunks]\\n\\n Answer the question: q"
in the user turn (`models.ask_frame`): question first. A question asked after reading is unknown
while reading, and a cache can only be extended at its end, so the online frame opens with a
fixed, question-free prefix and puts the question after the context:

    <chat template up to the user's text>Context:\\n [et(s_1) … et(s_n)]
    \\n\\nQuestion: q\\n\\nAnswer the question: q<end of user turn><assistant header>

This is the one deviation from the frame the tokenizer was trained in (the question is not
seen before the context). `OnlineConfig.frame="none"` opens with nothing, for language-model
scoring (the paper's Table 3 protocol), and cannot answer questions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from extok_rag.config import GenerationConfig, k_choices
from extok_rag.errors import ExtokError
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.generation import TextPieces, loops, next_token
from extok_rag.models.hf_cache import cache_kwargs
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import TokenSegment

CONTEXT_OPENING = "Context:\n"  # the ask frame's context line, the last text before the history


@dataclass(frozen=True)
class OnlineConfig:
    """How a stream is read. `session_tokens`: raw tokens per session, each condensed as one
    chunk (512: the chunk length the shipped tokenizer was trained on). `k`: fixed, or None
    for auto. `question_tokens` and `answer_tokens`: positions auto-k keeps free for the
    question's frame and the answer. `frame`: "ask" (the ask frame's opening before the
    history) or "none" (nothing before it: scoring only). `append_positions`: how many
    condensed positions wait before they run into the cache in one forward (1: each session
    at once)."""

    session_tokens: int = 512
    k: int | None = None
    question_tokens: int = 64
    answer_tokens: int = 256
    frame: Literal["ask", "none"] = "ask"
    append_positions: int = 512  # condensed positions run into the cache in one forward

    def __post_init__(self) -> None:
        if self.session_tokens < 1 or self.question_tokens < 0 or self.answer_tokens < 0:
            raise ExtokError("session tokens must be positive, question and answer tokens >= 0")
        if self.append_positions < 1:
            raise ExtokError("append positions must be positive")
        online_ks(self.k)


@dataclass(frozen=True)
class SessionRead:
    """One session read: its raw tokens, the extensible embeddings they became, and (when
    scored) each token's negative log-likelihood given everything before it."""

    tokens: int
    condensed: int
    nll: torch.Tensor | None = None  # (tokens,) fp32, or (tokens - 1,) when nothing preceded


# -- k -----------------------------------------------------------------------------------
def online_ks(k: int | None) -> list[int]:
    """The k a reader may condense at, smallest first: `k` alone when given (it must be one the
    tokenizer pools to: a learned merge tree serves exactly these), else every choice."""
    allowed = k_choices(1)
    if k is None:
        return allowed
    if k not in allowed:
        raise ExtokError(
            f"k={k}: sessions are condensed at k in {', '.join(map(str, allowed))} (or auto)"
        )
    return [k]


def condensed_positions(n_tokens: int, session_tokens: int, k: int) -> int:
    """Positions n tokens take once read: each session of L tokens becomes ceil(L/k)."""
    full, rest = divmod(n_tokens, session_tokens)
    return full * -(-session_tokens // k) + -(-rest // k)


def plan_k(n_tokens: int, window: int, opening: int, cfg: OnlineConfig) -> int:
    """The k to read `n_tokens` at: the smallest allowed one whose condensed history, after
    `opening` positions, leaves room for one raw session, the question and the answer."""
    raw = min(cfg.session_tokens, n_tokens)
    reserve = opening + raw + cfg.question_tokens + cfg.answer_tokens

    def needed(k: int) -> int:
        return reserve + condensed_positions(n_tokens, cfg.session_tokens, k)

    ks = online_ks(cfg.k)
    for k in ks:
        if needed(k) <= window:
            return k
    k = ks[-1]
    what = (
        f"{n_tokens} tokens read at k={k} take {needed(k)} positions (condensed history "
        f"{needed(k) - reserve}, one raw session {raw}, question and answer "
        f"{cfg.question_tokens + cfg.answer_tokens}, frame {opening})"
    )
    larger = cfg.k is not None and k < k_choices(1)[-1]
    advice = "use a larger k or auto" if larger else "read less or in shorter sessions"
    raise ExtokError(f"{what}; the LLM window is {window}: {advice}")


# -- the frame ------------------------------------------------------------------------------
def closing_text(question: str) -> str:
    """The user turn's text after the history: the question, then the ask frame's last line."""
    return f"\n\nQuestion: {question}\n\nAnswer the question: {question}"


def frame_ids(llm: FrozenLLM, question: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The chat prompt's token ids before the history (a,) and after it (b,), rendered through
    the LLM's chat template around a placeholder. The opening never depends on the question."""
    marker = torch.zeros(1, llm.hidden_size)  # stands for the history; its values are unused
    row = llm.chat_row([CONTEXT_OPENING, marker, closing_text(question)])
    opening, closing = row[0], row[-1]
    assert isinstance(opening, TokenSegment) and isinstance(closing, TokenSegment)
    return opening.ids, closing.ids


def as_ids(llm: FrozenLLM, source: str | torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Text (tokenised by the LLM's tokenizer, no special tokens) or token ids, as (n,) long."""
    if isinstance(source, str):
        return llm.tokenize(source)
    return torch.as_tensor(source, dtype=torch.long).flatten()


# -- the reader -----------------------------------------------------------------------------
class OnlineReader:
    """A stream read in sessions into the LLM's KV cache, then scored or asked about.

    `positions` is what the reader keeps for good: the frame's opening plus the condensed
    history, in the cache (`cached`) or still pending (`flush` runs them in). Every operation
    that runs raw tokens (scoring, answering) flushes, then crops the cache back to the
    history afterwards, so an interrupted call leaves the reader as it was before.
    """

    def __init__(
        self,
        llm: FrozenLLM,
        tokenizer: ExtensibleTokenizer,
        k: int,
        cfg: OnlineConfig | None = None,
    ):
        from transformers import DynamicCache

        self.llm, self.tokenizer = llm, tokenizer
        self.cfg = cfg or OnlineConfig()
        self.k = online_ks(k)[0]
        self.cache = DynamicCache(config=llm.config)
        self.positions = 0  # positions kept: the opening + the condensed history
        self.cached = 0  # of them, those in the cache (the rest are pending)
        self.tokens_read = 0
        self.sessions = 0
        self._pending: list[torch.Tensor] = []  # (m_i, d) each, waiting for `flush`
        self._next_logits: torch.Tensor | None = None  # (V,) fp32: the prediction after them
        opening = frame_ids(llm, "")[0] if self.cfg.frame == "ask" else torch.zeros(0).long()
        self.opening_positions = len(opening)
        if len(opening):
            self._keep(llm.embed_tokens(opening))
            self.flush()

    @classmethod
    def for_tokens(
        cls,
        llm: FrozenLLM,
        tokenizer: ExtensibleTokenizer,
        n_tokens: int,
        cfg: OnlineConfig | None = None,
    ) -> OnlineReader:
        """A reader whose k (fixed, or auto) keeps `n_tokens` read in the LLM window; a k that
        cannot is refused in one line (`plan_k`)."""
        cfg = cfg or OnlineConfig()
        opening = len(frame_ids(llm, "")[0]) if cfg.frame == "ask" else 0
        return cls(llm, tokenizer, plan_k(n_tokens, llm.max_positions, opening, cfg), cfg)

    @property
    def history_positions(self) -> int:
        return self.positions - self.opening_positions

    @property
    def cache_length(self) -> int:
        return self.cache.get_seq_length()

    @property
    def pending_positions(self) -> int:
        return self.positions - self.cached

    # -- reading ----------------------------------------------------------------------------
    def read(
        self,
        source: str | torch.Tensor | Sequence[int],
        score: bool = False,
        on_session: Callable[[SessionRead], None] | None = None,
    ) -> list[SessionRead]:
        """Read text or token ids in sessions of `session_tokens` (a short last one too: call
        again to go on). `score`: also each token's NLL given everything before it."""
        ids, done = as_ids(self.llm, source), []
        for session in ids.split(self.cfg.session_tokens) if len(ids) else ():
            done.append(self.read_session(session, score))
            if on_session is not None:
                on_session(done[-1])
        return done

    @torch.inference_mode()
    def read_session(self, ids: torch.Tensor, score: bool = False) -> SessionRead:
        """One session (L,): read raw against the history when scored, then condensed at k
        and kept: the history grows by ceil(L/k) positions (run into the cache once
        `append_positions` are pending). Interrupted, the reader is as it was before."""
        nll = self.score(ids) if score else None
        condensed = self.condense(ids)  # (ceil(L/k), d)
        self._keep(condensed)
        try:
            if self.pending_positions >= self.cfg.append_positions:
                self.flush()
        except BaseException:  # e.g. Ctrl-C inside the forward: this session was not read
            self._pending.pop()
            self.positions -= len(condensed)
            raise
        self.tokens_read += len(ids)
        self.sessions += 1
        return SessionRead(len(ids), len(condensed), nll)

    def _keep(self, embeds: torch.Tensor) -> None:  # (m, d), pending until `flush`
        self.llm.check_fits(self.positions + len(embeds))
        self._pending.append(embeds)
        self.positions += len(embeds)

    @torch.inference_mode()
    def flush(self) -> None:
        """Run the pending embeddings into the cache in one forward (nothing when none wait).
        Interrupted, they stay pending and the cache holds what it held."""
        if self._pending:
            self._append(torch.cat(self._pending))  # (pending, d)
            self._pending.clear()

    @torch.inference_mode()
    def condense(self, ids: torch.Tensor) -> torch.Tensor:  # (L,) -> (ceil(L/k), d)
        """A session's extensible embeddings: encoded as one chunk, down-scaled by k the way
        the tokenizer was trained."""
        states = self.tokenizer.encode([ids.to(self.tokenizer.device)])[0]  # (L, d)
        return self.tokenizer.downscale(states, self.k).to(self.llm.dtype)

    # -- scoring ----------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, source: str | torch.Tensor | Sequence[int]) -> torch.Tensor:  # (n, V)
        """Raw tokens read after the cached history: at each position the next-token logits,
        in one forward. The tokens are dropped from the cache afterwards."""
        ids = as_ids(self.llm, source)
        return torch.cat([logits for _, logits in self._read_raw(ids, max(1, len(ids)))])

    @torch.inference_mode()
    def score(self, source: str | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Each token's negative log-likelihood (n,) fp32 given the cached history and the
        tokens before it; (n - 1,) when nothing precedes the first (an empty "none" frame).
        Read in slices of `session_tokens` (only one slice's vocabulary logits are ever held:
        6,656 tokens at once peaked at 5 GB); the tokens are dropped from the cache after."""
        ids = as_ids(self.llm, source)
        self.flush()  # the prediction of ids[0] comes from the last pending position
        losses, previous = [], self._next_logits  # previous: (V,) the prediction of ids[0]
        for piece, logits in self._read_raw(ids, self.cfg.session_tokens):
            logits, targets = logits.float(), piece.to(logits.device)  # (m, V), (m,)
            if previous is None:
                losses.append(F.cross_entropy(logits[:-1], targets[1:], reduction="none"))
            else:
                predictions = torch.cat([previous[None], logits[:-1]])  # (m, V)
                losses.append(F.cross_entropy(predictions, targets, reduction="none"))
            previous = logits[-1]
        return torch.cat(losses)

    def _read_raw(
        self, ids: torch.Tensor, size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Raw ids (n,) read after the kept history in slices of `size`: each slice (m,) and its
        logits (m, V), the cache extended slice by slice, then cropped back to the history."""
        self.flush()
        self._rewind()
        self.llm.check_fits(self.positions + len(ids))
        try:
            for piece in ids.split(size):
                yield piece, self._forward(self.llm.embed_tokens(piece))
        finally:
            self._rewind()

    # -- asking -----------------------------------------------------------------------------
    def ask(self, question: str, gen: GenerationConfig | None = None) -> Iterator[str]:
        """The answer to `question` over what was read, as text pieces (whole characters),
        decoded against the cache (greedy by default); the cache is cropped back after. A
        reader without the ask frame, or a question that does not fit, is refused here."""
        if self.cfg.frame != "ask":
            raise ExtokError("this reader was opened without the ask frame: it only scores")
        gen = gen or GenerationConfig()
        closing = frame_ids(self.llm, question)[1]  # (b,)
        self.llm.check_fits(self.positions + len(closing) + gen.max_new_tokens)
        return self._pieces(self._answer_ids(closing, gen))

    def _pieces(self, ids: Iterator[int]) -> Iterator[str]:
        text = TextPieces(self.llm.tokenizer)
        with contextlib.closing(ids):  # stops decoding (and crops) when the caller stops
            for token in ids:
                piece = text.push(token)
                if piece:
                    yield piece

    def answer(self, question: str, gen: GenerationConfig | None = None) -> str:
        return "".join(self.ask(question, gen))

    @torch.inference_mode()
    def _answer_ids(self, closing: torch.Tensor, gen: GenerationConfig) -> Iterator[int]:
        """Token ids after the frame's closing (b,): until end of turn, a loop (`loops`) or
        `max_new_tokens`. Each step appends one token to the cache; all are cropped after."""
        self.flush()
        self._rewind()
        rng = torch.Generator().manual_seed(gen.seed) if gen.seed is not None else None
        stop, ids = self.llm.eos_token_ids, []
        try:
            logits = self._forward(self.llm.embed_tokens(closing), keep=1)[-1]  # (V,)
            while True:
                token = next_token(logits.cpu(), gen, rng)
                if token in stop:
                    return
                yield token
                ids.append(token)
                if len(ids) >= gen.max_new_tokens or loops(ids, gen.repeat_stop):
                    return
                step = self.llm.embed_tokens(torch.tensor([token]))  # (1, d)
                logits = self._forward(step, keep=1)[-1]
        finally:
            self._rewind()

    # -- the cache --------------------------------------------------------------------------
    def _forward(self, embeds: torch.Tensor, keep: int = 0) -> torch.Tensor:
        """Run embeddings (n, d) at the positions after the cache, extending it; the logits of
        the last `keep` positions (0: all), (keep or n, V)."""
        start = self.cache_length
        position_ids = torch.arange(start, start + len(embeds), device=self.llm.device)[None]
        out = self.llm.model(
            inputs_embeds=embeds.to(self.llm.device, self.llm.dtype)[None],  # (1, n, d)
            position_ids=position_ids,  # (1, n)
            **cache_kwargs(self.cache),
            use_cache=True,
            logits_to_keep=keep,
        )
        return out.logits[0]

    def _append(self, embeds: torch.Tensor) -> None:
        """Put embeddings (m, d) in the cache for good, at positions P … P+m-1."""
        self._rewind()
        try:
            self._next_logits = self._forward(embeds, keep=1)[-1].float()  # (V,)
        except BaseException:
            self._rewind()  # e.g. Ctrl-C inside the forward: drop what some layers took
            raise
        self.cached += len(embeds)

    def _rewind(self) -> None:
        """Crop every layer's keys and values back to the cached history (layer by layer: a
        forward interrupted half-way has extended only the first layers)."""
        for layer in self.cache.layers:
            extra = layer.get_seq_length() - self.cached
            if extra > 0:
                layer.crop(-extra)

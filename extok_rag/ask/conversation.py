"""A conversation read whole: its system prompt, every earlier turn and the chat template, with
the last user message asked the way `ask` asks a question (retrieval, the ask frame). When the
turns outgrow the window, the oldest are condensed into extensible embeddings instead of
dropped: the paper's online mode (§3) applied to a chat history.

    [system: its text + "Earlier in this conversation:\\n" et(s_1) … et(s_m)]   condensed, at k
    [user] [assistant] … [user] [assistant]                                      the newest, raw
    [user: Question: q  Context: …  Answer the question: q]                      `ask`'s turn

Who gets the window. W = the LLM window less the answer. The question's turn is built first on
its own (A positions). The history may take what is left, W - A, and at least HISTORY_SHARE of
W: when a history needs more than W - A, the question's turn is rebuilt inside what the history
leaves (the budget modes, and auto, shrink to fit). A history that fits its room stays raw.
One that does not keeps its newest turns raw in at most RAW_SHARE of the room; the older ones
are written as a transcript ("User: …"), cut into sessions of SESSION_TOKENS and condensed,
each on its own, at the smallest k of `online_ks` that fits (more turns condensed before a
larger k). Whole turns only; system messages always stay raw.

A condensed session is keyed by its token ids and k (`Condenser`): a chat that sends its whole
history every turn re-condenses only the one session that grew.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from extok_rag.ask.answer import retrieved
from extok_rag.ask.build import build_prompt
from extok_rag.ask.online import condensed_positions, online_ks
from extok_rag.ask.prompt import Prompt
from extok_rag.ask.retrieval import Retrieved
from extok_rag.config import AskConfig, GenerationConfig
from extok_rag.errors import ExtokError, InputTooLongError
from extok_rag.indexes import IndexSnapshot
from extok_rag.models.embedder import Embedder
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.generation import stream_text
from extok_rag.models.llm import FrozenLLM, Message
from extok_rag.models.mixed_input import row_length

ROLES = ("system", "user", "assistant")
HISTORY_SHARE = 0.5  # of the window less the answer: what a long history may always take
RAW_SHARE = 0.5  # of the history's room: what its newest turns take raw once it is condensed
SESSION_TOKENS = 512  # raw tokens per condensed session: the chunk length the tokenizer knows
CONDENSED_OPENING = "\n\nEarlier in this conversation:\n"
SPEAKERS = {"user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class Turn:
    """One message as a client sends it: a role of ROLES and its text."""

    role: str
    text: str


@dataclass
class History:
    """The earlier turns as the prompt reads them: `messages` before the question's turn and
    what they take (`positions`, the chat template included); of the `turns` given (system
    messages not counted), the oldest `condensed_turns` were condensed: `condensed_tokens` raw
    tokens into `condensed_positions`, at `k`."""

    messages: list[Message] = field(default_factory=list)
    positions: int = 0
    turns: int = 0
    condensed_turns: int = 0
    condensed_tokens: int = 0
    condensed_positions: int = 0
    k: int | None = None

    def describe(self) -> dict:
        return {
            "turns": self.turns,
            "history_positions": self.positions,
            "condensed_turns": self.condensed_turns,
            "condensed_tokens": self.condensed_tokens,
            "condensed_positions": self.condensed_positions,
            "k": self.k,
        }


def split_question(turns: Sequence[Turn]) -> tuple[list[Turn], str]:
    """The earlier turns and the question: the last message, which must be the user's."""
    for turn in turns:
        if turn.role not in ROLES:
            raise ExtokError(f"unknown role {turn.role!r}: messages are {', '.join(ROLES)}")
    if not turns or turns[-1].role != "user":
        raise ExtokError("the conversation must end with a user message: nothing to answer")
    question = turns[-1].text
    if not question.strip():
        raise ExtokError("the last user message is empty: nothing to answer")
    return list(turns[:-1]), question


# -- condensing --------------------------------------------------------------------------------
class Condenser:
    """Token ids -> extensible embeddings at k, session by session, each encoded on its own by
    the tokenizer and down-scaled the way it was trained. Sessions are cached by their ids
    and k (at most `cache_sessions`), so a growing history re-encodes only what is new. The
    tokenizer loads on first use (`load`); safe to share between threads."""

    def __init__(
        self,
        load: Callable[[], ExtensibleTokenizer],
        session_tokens: int = SESSION_TOKENS,
        cache_sessions: int = 512,
    ):
        self._load, self._tokenizer = load, None
        self.session_tokens, self.cache_sessions = session_tokens, cache_sessions
        self._cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> ExtensibleTokenizer:
        if self._tokenizer is None:
            self._tokenizer = self._load()
        return self._tokenizer

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, k: int) -> list[torch.Tensor]:
        """ids (n,) -> one (ceil(L_i/k), d) per session of at most `session_tokens`."""
        with self._lock:
            sessions = list(ids.split(self.session_tokens))
            keys = [_key(s, k) for s in sessions]
            missing = [i for i, key in enumerate(keys) if key not in self._cache]
            for start in range(0, len(missing), 8):  # 8 sessions per encoder batch
                batch = missing[start : start + 8]
                tokenizer = self.tokenizer
                states = tokenizer.encode([sessions[i].to(tokenizer.device) for i in batch])
                for i, s in zip(batch, states, strict=True):
                    self._remember(keys[i], tokenizer.downscale(s, k))
            out = []
            for key in keys:
                self._cache.move_to_end(key)
                out.append(self._cache[key])
            return out

    def _remember(self, key: bytes, condensed: torch.Tensor) -> None:
        self._cache[key] = condensed
        while len(self._cache) > self.cache_sessions:
            self._cache.popitem(last=False)


def _key(ids: torch.Tensor, k: int) -> bytes:
    return hashlib.blake2b(ids.numpy().tobytes() + k.to_bytes(2, "little")).digest()


# -- fitting the history -----------------------------------------------------------------------
def transcript(turns: Sequence[Turn]) -> str:
    """Turns as the plain text that is condensed: "User: …" and "Assistant: …" lines."""
    return "".join(f"{SPEAKERS[t.role]}: {t.text.strip()}\n" for t in turns)


class HistoryFitter:
    """Fits earlier turns into a number of positions (`fit`), raw where they can be."""

    def __init__(self, llm: FrozenLLM, turns: Sequence[Turn], condenser: Condenser | None):
        self.llm, self.condenser = llm, condenser
        self._probe = [Message("user", ["?"])]  # a question's turn to measure messages before
        self._probe_positions = row_length(llm.messages_row(self._probe))
        system = "\n\n".join(t.text for t in turns if t.role == "system")
        self.system = system or None
        self.turns = [t for t in turns if t.role != "system"]
        self._head = [Message("system", [self.system])] if self.system else []
        self._head_positions = self.positions(self._head)
        self.costs = [self._cost(t) for t in self.turns]  # positions of each raw turn
        self.tokens = [len(llm.tokenize(transcript([t]))) for t in self.turns]

    def messages(self, condensed: Sequence[torch.Tensor], raw: Sequence[Turn]) -> list[Message]:
        system: list = [self.system] if self.system else []
        if condensed:
            system += [CONDENSED_OPENING.lstrip("\n") if not system else CONDENSED_OPENING]
            system += list(condensed)
        head = [Message("system", system)] if system else []
        return head + [Message(t.role, [t.text]) for t in raw]

    def positions(self, messages: Sequence[Message]) -> int:
        """What `messages` add to a prompt, the chat template included (a system message
        replaces the template's default one: the difference is measured, never assumed)."""
        with_probe = self.llm.messages_row([*messages, *self._probe])
        return row_length(with_probe) - self._probe_positions

    def _cost(self, turn: Turn) -> int:
        turn_only = Message(turn.role, [turn.text])
        return self.positions([*self._head, turn_only]) - self._head_positions

    def fit(self, room: int) -> History:
        """The newest turns raw, the older condensed, in at most `room` positions; refused in
        one line when not even everything condensed at the largest k fits."""
        n, base = len(self.turns), self._head_positions
        if base + sum(self.costs) <= room:
            return History(self.messages([], self.turns), base + sum(self.costs), n)
        if self.condenser is None:
            raise InputTooLongError(
                f"the conversation takes {base + sum(self.costs)} positions and may take "
                f"{room}: condensing it needs an extensible tokenizer"
            )
        opening = len(self.llm.tokenize(CONDENSED_OPENING)) + 1  # and the separator, if any
        ks, session = online_ks(None), self.condenser.session_tokens
        # the newest turns raw in at most RAW_SHARE of the room; then the smallest k first,
        # condensing as few turns as it allows
        tails = [sum(self.costs[c:]) for c in range(n + 1)]
        first = next(c for c in range(1, n + 1) if tails[c] <= room * RAW_SHARE)
        for k in ks:
            for condensed in range(first, n + 1):
                tokens = sum(self.tokens[:condensed])
                estimate = base + opening + tails[condensed]
                estimate += condensed_positions(tokens, session, k)
                if estimate <= room:
                    history = self._condense(condensed, k)
                    if history.positions <= room:
                        return history
        everything = base + opening + condensed_positions(sum(self.tokens), session, ks[-1])
        raise InputTooLongError(
            f"the conversation takes {everything} positions even condensed at k={ks[-1]}, "
            f"and may take {room} of the LLM window ({self.llm.max_positions}): send fewer "
            "turns"
        )

    def _condense(self, n: int, k: int) -> History:
        assert self.condenser is not None
        ids = self.llm.tokenize(transcript(self.turns[:n]))
        dtype = self.llm.dtype
        condensed = [c.to(dtype) for c in self.condenser(ids, k)]
        messages = self.messages(condensed, self.turns[n:])
        return History(
            messages,
            self.positions(messages),
            len(self.turns),
            n,
            len(ids),
            sum(len(c) for c in condensed),
            k,
        )


def history_room(window: int, answer: int, question_positions: int) -> int:
    """Positions the history may take beside a question's turn of `question_positions`."""
    free = window - answer
    return max(free - question_positions, int(free * HISTORY_SHARE))


def with_history(
    llm: FrozenLLM,
    earlier: Sequence[Turn],
    answer_tokens: int,
    build: Callable[[Sequence[Message]], Prompt],
    condenser: Condenser | None,
) -> tuple[Prompt, History]:
    """The prompt `build` makes for the question (given the history's messages), with the
    earlier turns fitted beside it: raw while they fit, the oldest condensed when not."""
    if not earlier:
        return build(()), History()
    fitter = HistoryFitter(llm, earlier, condenser)
    alone = build(())
    room = history_room(llm.max_positions, answer_tokens, alone.positions)
    history = fitter.fit(room)
    return build(history.messages), history


def converse(
    llm: FrozenLLM,
    embedder: Embedder | None,
    snapshot: IndexSnapshot | None,
    turns: Sequence[Turn],
    cfg: AskConfig,
    gen: GenerationConfig,
    condenser: Condenser | None,
) -> tuple[list[Retrieved], Prompt, History]:
    """`ask` for a conversation: the last user message is the question, retrieved for in the
    index (none: no retrieval) and framed as `ask` frames it, after the earlier turns."""
    earlier, question = split_question(turns)
    if snapshot is None or embedder is None:
        chunks, stride, cfg = [], 1, AskConfig(mode="none")
    else:
        chunks, stride = retrieved(llm, embedder, snapshot, question, cfg), snapshot.manifest.stride

    def build(history: Sequence[Message]) -> Prompt:
        return build_prompt(
            llm, question, chunks, cfg, stride, gen.max_new_tokens, embedder, history
        )

    prompt, history = with_history(llm, earlier, gen.max_new_tokens, build, condenser)
    return chunks, prompt, history


class Chat:
    """A conversation kept turn by turn: each message is answered over the whole conversation
    (`converse`), the oldest turns condensed once they outgrow the window; with a `snapshot`
    (and its `embedder`), each message is also retrieved for in that index."""

    def __init__(
        self,
        llm: FrozenLLM,
        condenser: Condenser | None,
        cfg: AskConfig,
        gen: GenerationConfig,
        snapshot: IndexSnapshot | None = None,
        embedder: Embedder | None = None,
        system: str | None = None,
    ):
        self.llm, self.condenser, self.cfg, self.gen = llm, condenser, cfg, gen
        self.snapshot, self.embedder = snapshot, embedder
        self.turns: list[Turn] = [Turn("system", system)] if system else []

    def say(self, text: str) -> tuple[list[Retrieved], Prompt, History, Iterator[str]]:
        """Retrieval, the prompt and how the history was read, and the answer's text pieces
        (lazy). The exchange joins the conversation once the answer ends or is stopped (the
        part already shown is kept); a message refused before that leaves it as it was."""
        turns = [*self.turns, Turn("user", text)]
        chunks, prompt, history = converse(
            self.llm, self.embedder, self.snapshot, turns, self.cfg, self.gen, self.condenser
        )

        def pieces() -> Iterator[str]:
            shown: list[str] = []
            try:
                for piece in stream_text(self.llm, prompt.row, self.gen):
                    shown.append(piece)
                    yield piece
            finally:
                self.turns = [*turns, Turn("assistant", "".join(shown).strip())]

        return chunks, prompt, history, pieces()

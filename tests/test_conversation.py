"""A conversation read whole (`extok_rag.ask.conversation`), on the tiny Llama (a 512-position
window, one token per byte): short histories stay raw with their system prompt, long ones
condense their oldest turns to fit, condensed sessions are cached, and what cannot fit or
cannot be answered is refused in one line."""

from __future__ import annotations

import pytest
import torch

from extok_rag.ask.conversation import (
    Chat,
    Condenser,
    HistoryFitter,
    Turn,
    converse,
    split_question,
    transcript,
)
from extok_rag.config import AskConfig, GenerationConfig, TokenizerConfig
from extok_rag.errors import ExtokError, InputTooLongError
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.generation import generate_ids
from extok_rag.models.mixed_input import EmbeddingSegment, TokenSegment, row_length

GEN = GenerationConfig(max_new_tokens=16)


@pytest.fixture(scope="module")
def condenser(tiny_llm):
    tokenizer = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))
    return Condenser(lambda: tokenizer, session_tokens=64)


def text_of(llm, row) -> str:
    return "".join(llm.tokenizer.decode(s.ids) for s in row if isinstance(s, TokenSegment))


def chat(n_turns: int, filler: int = 0) -> list[Turn]:
    turns = [Turn("system", "Be brief."), Turn("user", "My name is Zorblax. Code 4417.")]
    for i in range(n_turns):
        turns += [Turn("assistant", f"Noted {i}. " + "x" * filler), Turn("user", f"And {i}?")]
    return [*turns, Turn("user", "What is my code?")]


def test_a_short_conversation_is_read_whole_with_its_system_prompt(tiny_llm, condenser):
    _, prompt, history = converse(tiny_llm, None, None, chat(2), AskConfig(), GEN, condenser)
    text = text_of(tiny_llm, prompt.row)
    assert "Be brief." in text and "Zorblax" in text and "Noted 1." in text
    assert text.index("Zorblax") < text.index("Noted 1.") < text.index("What is my code?")
    assert "named SmolLM" not in text and text.count("<|im_start|>system") == 1
    assert history.turns == 5 and history.condensed_turns == 0 and history.k is None
    assert prompt.positions == row_length(prompt.row)
    assert not any(isinstance(s, EmbeddingSegment) for s in prompt.row)


def test_a_long_conversation_condenses_its_oldest_turns_and_fits(tiny_llm, condenser):
    turns = chat(8, filler=60)  # ~700 raw positions: more than the 512-position window
    _, prompt, history = converse(tiny_llm, None, None, turns, AskConfig(), GEN, condenser)
    assert prompt.positions + GEN.max_new_tokens <= tiny_llm.max_positions
    assert 0 < history.condensed_turns < history.turns  # the oldest condensed, the newest raw
    assert history.condensed_tokens == len(
        tiny_llm.tokenize(transcript(turns[1 : 1 + history.condensed_turns]))
    )
    condensed = [s for s in prompt.row if isinstance(s, EmbeddingSegment)]
    assert sum(len(s) for s in condensed) == history.condensed_positions > 0
    text = text_of(tiny_llm, prompt.row)
    assert "Be brief." in text and "Earlier in this conversation:" in text
    assert "Zorblax" not in text  # the first turn was condensed, never dropped silently
    assert "And 7?" in text and text.endswith("<|im_start|>assistant\n")
    assert list(generate_ids(tiny_llm, prompt.row, GEN)) is not None  # it decodes


def test_fewer_turns_are_condensed_when_more_room_is_given(tiny_llm, condenser):
    fitter = HistoryFitter(tiny_llm, chat(8, filler=60)[:-1], condenser)
    tight, roomy = fitter.fit(250), fitter.fit(400)
    assert tight.positions <= 250 and roomy.positions <= 400
    assert roomy.condensed_turns <= tight.condensed_turns
    assert fitter.fit(10_000).condensed_turns == 0


def test_condensed_sessions_are_cached_by_their_ids(tiny_llm):
    tokenizer = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))
    encoded: list[int] = []
    encode = tokenizer.encode
    tokenizer.encode = lambda chunks: encoded.append(len(chunks)) or encode(chunks)
    condenser = Condenser(lambda: tokenizer, session_tokens=32)
    ids = torch.arange(3, 100)
    first = condenser(ids[:70], 4)  # sessions 32 + 32 + 6
    again = condenser(ids, 4)  # 32 + 32 + 32 + 1: the first two are cached
    assert encoded == [3, 2]
    torch.testing.assert_close(first[0], again[0])
    assert [len(c) for c in again] == [8, 8, 8, 1]


def test_a_conversation_that_cannot_fit_even_condensed_is_refused(tiny_llm, condenser):
    turns = chat(40, filler=400)
    with pytest.raises(InputTooLongError, match="even condensed at k=32"):
        converse(tiny_llm, None, None, turns, AskConfig(), GEN, condenser)
    with pytest.raises(InputTooLongError, match="needs an extensible tokenizer"):
        converse(tiny_llm, None, None, chat(8, filler=60), AskConfig(), GEN, None)


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([Turn("user", "hi"), Turn("assistant", "hello")], "must end with a user message"),
        ([Turn("tool", "{}"), Turn("user", "hi")], "unknown role 'tool'"),
        ([Turn("user", "  ")], "is empty"),
    ],
)
def test_what_cannot_be_answered_is_refused_in_one_line(turns, message):
    with pytest.raises(ExtokError, match=message):
        split_question(turns)


def test_the_question_alone_is_asked_as_before(tiny_llm):
    turns = [Turn("user", "Why is the sky blue?")]
    _, prompt, history = converse(tiny_llm, None, None, turns, AskConfig(), GEN, None)
    alone = tiny_llm.chat_row(["Why is the sky blue?"])
    assert text_of(tiny_llm, prompt.row) == text_of(tiny_llm, alone)
    assert history.turns == 0


def test_a_chat_keeps_every_exchange_and_condenses_the_oldest(tiny_llm, condenser):
    chat_ = Chat(tiny_llm, condenser, AskConfig(), GEN, system="Be brief.")
    for i in range(12):
        _, prompt, history, pieces = chat_.say(f"Message {i}: " + "y" * 40)
        answer = "".join(pieces)
        assert chat_.turns[-1] == Turn("assistant", answer.strip())
        assert prompt.positions + GEN.max_new_tokens <= tiny_llm.max_positions
    assert len(chat_.turns) == 1 + 2 * 12 and history.turns == 22
    assert history.condensed_turns > 0  # twelve exchanges outgrow the 512-position window
    _, _, _, pieces = chat_.say("Stopped?")
    next(pieces, None)
    pieces.close()  # a stopped answer still joins the conversation, as far as it was shown
    assert chat_.turns[-2] == Turn("user", "Stopped?") and chat_.turns[-1].role == "assistant"


def test_extok_rag_chat_answers_each_message_over_the_conversation(tiny_llm_dir):
    from typer.testing import CliRunner

    from extok_rag.cli import app

    args = ["chat", "--llm", str(tiny_llm_dir), "--device", "cpu", "--dtype", "float32"]
    messages = "".join(f"Message {i}: " + "z" * 60 + "\n" for i in range(10))
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "8"], input=messages)
    assert result.exit_code == 0, result.output
    assert "read condensed at k=" in result.output  # the oldest turns, once they outgrow it
    assert "Traceback" not in result.output

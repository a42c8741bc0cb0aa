"""Query-aware expansion on the tiny models: sentence spans, scoring, the greedy
budget plan, and prompts (expand, spans only, raw truncated) that keep to their budget."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from extok_rag.ask.budget import scored_spans
from extok_rag.ask.build import build_prompt
from extok_rag.ask.prompt import PromptRequest
from extok_rag.ask.retrieval import Retrieved
from extok_rag.config import FRAMES, AskConfig, RuntimeConfig, TokenizerConfig
from extok_rag.errors import ExtokError, InputTooLongError
from extok_rag.models.ask_frame import ask_frame, light_frame
from extok_rag.models.embedder import Embedder
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer, downscale
from extok_rag.models.mixed_input import EmbeddingSegment, row_length
from extok_rag.spans import (
    Span,
    chunk_parts,
    chunk_spans,
    lexical_scores,
    plan_expansion,
    token_starts,
)

TEXTS = (
    "Alpha is a red planet. It has seven moons and a thin atmosphere of argon. Its year lasts "
    "four hundred days.",
    "Beta is a city of bridges. It was founded in 1204 by river merchants. The harbour is deep.",
)
QUESTION = "How many moons does Alpha have?"


@pytest.fixture(scope="module")
def chunks(tiny_llm) -> list[Retrieved]:
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))
    out = []
    for i, text in enumerate(TEXTS):
        ids = tiny_llm.tokenize(text)
        with torch.no_grad():
            states = downscale(tok.encode([ids])[0], 2).numpy().astype(np.float16)
        out.append(Retrieved(i, 1.0 - i / 10, f"doc{i}.txt", text, len(ids), states))
    return out


@pytest.fixture(scope="module")
def embedder(tiny_embedder_dir) -> Embedder:
    return Embedder.load(tiny_embedder_dir, RuntimeConfig(device="cpu", dtype="float32"))


def test_spans_are_sentences_on_state_boundaries(tiny_llm, chunks):
    c = chunks[0]
    starts = token_starts(tiny_llm.tokenizer, c.text, c.n_tokens)
    spans = chunk_spans(0, c.text, starts, stride=2)
    assert spans[0].start == 0 and spans[-1].end == c.n_tokens
    for a, b in itertools.pairwise(spans):
        assert a.end == b.start and a.end % 2 == 0  # contiguous, aligned to the stride
    assert "".join(s.text for s in spans) == c.text
    assert any("seven moons" in s.text for s in spans) and len(spans) >= 3


def test_lexical_score_finds_the_sentence_with_the_question_words():
    spans = [Span(0, 0, 2, "Alpha is red."), Span(0, 2, 4, "It has seven moons, says Alpha.")]
    scores = lexical_scores(QUESTION, spans)
    assert scores[1] > scores[0] > 0


def test_plan_fills_the_budget_by_score_then_picks_the_smallest_k():
    spans = [Span(0, 0, 8, "a", 0.1), Span(0, 8, 16, "b", 0.9), Span(0, 16, 24, "c", 0.5)]
    cost = {(0, 8): 8, (8, 16): 8, (16, 24): 8}

    def raw_cost(s):
        return cost[(s.start, s.end)]

    # nothing expanded, all 24 tokens (12 states) at k=32: 1 position; fixed 10
    assert plan_expansion(spans, raw_cost, 10, 10, stride=2) is None
    plan = plan_expansion(spans, raw_cost, 10, 20, stride=2)
    assert plan.raw == {(0, 8, 16)}  # the best span; a second would not fit at any k
    # the rest (4 states before, 4 after): k=4 takes 10 + 2 + 8 + 2 = 22; k=8 takes 20
    assert plan.k == 8


@pytest.mark.parametrize("scorer", ["minilm", "lexical", "both", "learned", "llm"])
def test_expand_prompt_keeps_to_its_budget_in_document_order(tiny_llm, chunks, embedder, scorer):
    raw = build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="raw"), 2, 8)
    cfg = AskConfig(mode="expand", budget=int(0.6 * raw.positions), scorer=scorer)
    prompt = build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder)
    assert prompt.positions <= cfg.budget < raw.positions
    assert prompt.expanded and prompt.k in (2, 4, 8, 16, 32)
    embeds = [seg for seg in prompt.row if isinstance(seg, EmbeddingSegment)]
    assert embeds  # the rest of the chunks is still there, compressed
    text = tiny_llm.tokenizer.decode(torch.cat([s.ids for s in prompt.row if hasattr(s, "ids")]))
    for span in prompt.expanded:
        assert span.text.strip() in text
    assert all(s.chunk == 0 for s in prompt.expanded[:1])  # Alpha's chunk holds the answer


def test_controls_spans_only_and_truncated_keep_to_the_budget(tiny_llm, chunks, embedder):
    raw = build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="raw"), 2, 8)
    budget = int(0.5 * raw.positions)
    spans = build_prompt(
        tiny_llm, QUESTION, chunks, AskConfig(mode="spans", budget=budget), 2, 8, embedder
    )
    cut = build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="truncated", budget=budget), 2, 8)
    for prompt in (spans, cut):
        assert prompt.positions <= budget
        assert not any(isinstance(seg, EmbeddingSegment) for seg in prompt.row)
    assert spans.expanded and spans.k is None


@pytest.mark.parametrize("mode", ["spans", "expand"])
def test_spans_are_cut_at_sentence_starts_whatever_the_index_stride(
    tiny_llm, chunks, embedder, mode
):
    """At stride 2, state-aligned spans can start on the last token of the sentence before
    ("... planet. I" / "t has seven moons"); the raw spans read start where the sentences do,
    in expand too, whose compressed runs read the state a raw span shares with them."""
    raw = build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="raw"), 2, 8)
    budget = int(0.6 * raw.positions)
    cfg = AskConfig(mode=mode, budget=budget, scorer="lexical")
    aligned = [
        span
        for i, c in enumerate(chunks)
        for span in chunk_spans(i, c.text, token_starts(tiny_llm.tokenizer, c.text, c.n_tokens), 2)
    ]
    assert any(not s.text[0].isupper() for s in aligned)  # the stride split a word here
    prompt = build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder)
    assert prompt.expanded and prompt.positions <= budget
    assert any(isinstance(seg, EmbeddingSegment) for seg in prompt.row) == (mode == "expand")
    for span in prompt.expanded:  # cut at stride 1: sentence starts, and 48-token windows
        c = chunks[span.chunk]
        exact = chunk_spans(
            span.chunk, c.text, token_starts(tiny_llm.tokenizer, c.text, c.n_tokens), 1
        )
        assert (span.start, span.end, span.text) in {(s.start, s.end, s.text) for s in exact}
    assert any(s.text.startswith("It has seven moons") for s in prompt.expanded)


def test_a_budget_below_the_frame_is_a_clear_error(tiny_llm, chunks, embedder):
    from extok_rag.errors import InputTooLongError

    cfg = AskConfig(mode="expand", budget=20)
    with pytest.raises(InputTooLongError, match="--budget"):
        build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder)


def request(tiny_llm, chunks, cfg: AskConfig) -> PromptRequest:
    return PromptRequest(tiny_llm, QUESTION, chunks, cfg, 2, 8)


def test_a_budget_too_small_for_every_chunk_leaves_out_the_lowest_ranked(
    tiny_llm, chunks, embedder
):
    from extok_rag.spans import compressed_count

    def smallest(n: int) -> int:  # n chunks, all compressed at the largest k
        frame = request(tiny_llm, chunks, AskConfig(mode="expand")).frame_positions(range(n), n)
        return frame + sum(compressed_count(len(c.states), 32, 2) for c in chunks[:n])

    assert smallest(1) < smallest(2)
    cfg = AskConfig(mode="expand", budget=smallest(2) - 1)
    prompt = build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder)
    assert prompt.chunks_read == 1 and prompt.positions <= cfg.budget
    assert all(s.chunk == 0 for s in prompt.expanded)
    assert any(isinstance(seg, EmbeddingSegment) for seg in prompt.row)
    cfg = replace(cfg, budget=smallest(2))
    assert build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder).chunks_read == 2


def test_a_budget_for_the_question_alone_reads_no_chunk(tiny_llm, chunks, embedder):
    from extok_rag.spans import compressed_count

    none = build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="none"), 2, 8)
    req = request(tiny_llm, chunks, AskConfig(mode="expand"))
    one = req.frame_positions([0], 1) + compressed_count(len(chunks[0].states), 32, 2)
    assert none.positions < one
    cfg = AskConfig(mode="expand", budget=one - 1)
    prompt = build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder)
    assert prompt.chunks_read == 0 and prompt.positions == none.positions


def test_auto_budget_is_the_window_less_the_answer(tiny_llm, chunks, embedder):
    prompt = build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="expand"), 2, 8, embedder)
    raw = build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="raw"), 2, 8)
    assert prompt.positions <= tiny_llm.max_positions - 8
    # the tiny window holds both chunks raw: every span is expanded, nothing compressed
    assert len(prompt.expanded) == sum(
        len(chunk_spans(i, c.text, token_starts(tiny_llm.tokenizer, c.text, c.n_tokens), 1))
        for i, c in enumerate(chunks)
    )
    req = request(tiny_llm, chunks, AskConfig(mode="expand"))
    whole = row_length(req.budget_row(range(len(chunks)), [c.text for c in chunks]))
    assert abs(prompt.positions - whole) <= 4 and whole < raw.positions  # the question once
    assert replace(AskConfig(), mode="expand").budget is None


@pytest.mark.parametrize("pooling", ["strided", "mean"])
def test_compressed_runs_are_pooled_the_way_the_chunk_was_stored(pooling):
    """Stored rows at stride 2, a run of spans between two expanded ones: the run's rows
    pooled by k/s with the chunk's own method."""
    states = torch.randn(12, 3)  # 24 tokens at stride 2
    spans = [Span(0, a, b, f"s{a}", 0.0) for a, b in [(0, 8), (8, 16), (16, 24)]]
    parts = chunk_parts(states, spans, {(8, 16)}, k=4, stride=2, pooling=pooling)
    assert parts[1] == "s8"
    torch.testing.assert_close(parts[0], downscale(states[0:4], 2, pooling))
    torch.testing.assert_close(parts[2], downscale(states[8:12], 2, pooling))


def test_a_run_reads_the_state_it_shares_with_a_raw_span_and_the_plan_counts_it():
    """Spans cut at sentence starts (odd tokens) over states stored at stride 2: each
    compressed run reads from the state holding its first token to the one holding its last,
    and the plan's count of positions is the row's."""
    states = torch.randn(12, 3)  # 24 tokens at stride 2
    spans = [Span(0, 0, 7, "s0", 0.0), Span(0, 7, 15, "s7", 1.0), Span(0, 15, 24, "s15", 0.0)]
    parts = chunk_parts(states, spans, {(7, 15)}, k=4, stride=2)
    assert parts[1] == "s7"
    torch.testing.assert_close(parts[0], downscale(states[0:4], 2))  # tokens 0..7
    torch.testing.assert_close(parts[2], downscale(states[7:12], 2))  # tokens 14..23

    def cost(s):  # only the middle span is short enough to read raw
        return 8 if s.start == 7 else 30

    # raw s7, the runs of tokens 0..7 (states 0..3) and 14..23 (states 7..11) at k=4: 2 + 3
    assert plan_expansion(spans, cost, 10, 10 + 2 + 8 + 3, stride=2, k=4).raw == {(0, 7, 15)}
    assert plan_expansion(spans, cost, 10, 10 + 2 + 8 + 2, stride=2, k=4).raw == set()
    # nothing raw: one run of 12 states (the shared ones once), 6 positions at k=4
    assert plan_expansion(spans, cost, 10, 10 + 6, stride=2, k=4).raw == set()


def test_expand_honours_a_given_k_or_refuses(tiny_llm, embedder, chunks):
    """`--k` in expand mode compresses the rest at that k (it was silently replaced by the
    smallest k that fits), and a k whose prompt cannot fit the budget is one clear error."""
    raw = build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="raw"), 2, 8)
    budget = raw.positions
    auto = build_prompt(
        tiny_llm, QUESTION, chunks, AskConfig(mode="expand", budget=budget), 2, 8, embedder
    )
    assert auto.k == 2
    for k in (8, 32):
        cfg = AskConfig(mode="expand", budget=budget, k=k)
        prompt = build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder)
        assert prompt.k == k and prompt.positions <= budget
    with pytest.raises(ExtokError, match="multiple of the index's stride"):
        build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="expand", k=3), 2, 8, embedder)
    frame_only = build_prompt(tiny_llm, QUESTION, [], AskConfig(mode="none"), 2, 8).positions
    with pytest.raises(InputTooLongError, match="k=2"):
        cfg = AskConfig(mode="expand", budget=frame_only + 10, k=2)
        build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder)


# -- the budget modes' light frame (issue 29) ------------------------------------------------
BUDGET_MODES = ("expand", "spans", "truncated")


def prompt_text(tiny_llm, prompt) -> str:
    """The prompt's raw tokens decoded (embeddings left out)."""
    ids = [seg.ids for seg in prompt.row if not isinstance(seg, EmbeddingSegment)]
    return tiny_llm.tokenizer.decode(torch.cat(ids))


def test_the_light_frame_asks_once_and_holds_only_what_it_is_given():
    embeds = torch.zeros(2, 3)
    assert light_frame("Q?", ["a", "b"], ["[x]\n", "[y]\n"]) == [
        "Context:\n[x]\na\n\n[y]\nb\n\nQuestion: Q?"
    ]
    parts = light_frame("Q?", [["a", embeds]])
    assert parts[0] == "Context:\na" and parts[1] is embeds and parts[2] == "\n\nQuestion: Q?"
    assert len(parts) == 3
    assert light_frame("Q?", []) == ask_frame("Q?", []) == ["Q?"]


SMOLLM_TEMPLATE = (  # SmolLM2's: a default system prompt when the messages bring none
    "{% for m in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_the_light_frame_drops_a_default_system_prompt_only(tiny_llm, chunks, embedder):
    """Under a template that adds a default system prompt, the light frame sends an empty
    system message instead (fewer positions); the standard frame, and a history with a system
    message of its own, keep what they had; a template with no default adds nothing."""
    from conftest import tiny_tokenizer

    from extok_rag.models.llm import Message

    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = SMOLLM_TEMPLATE
    smol = replace(tiny_llm, tokenizer=tokenizer)
    raw = build_prompt(smol, QUESTION, chunks, AskConfig(mode="raw"), 2, 8)
    cfg = AskConfig(mode="spans", budget=raw.positions // 2)
    light = build_prompt(smol, QUESTION, chunks, cfg, 2, 8, embedder)
    old = build_prompt(smol, QUESTION, chunks, replace(cfg, frame="standard"), 2, 8, embedder)
    assert "helpful" in prompt_text(smol, raw) and "helpful" in prompt_text(smol, old)
    assert "helpful" not in prompt_text(smol, light) and "<|im_start|>system" in prompt_text(
        smol, light
    )
    history = [Message("system", ["Be brief."])]
    own = build_prompt(smol, QUESTION, chunks, cfg, 2, 8, embedder, history)
    assert prompt_text(smol, own).count("system") == 1 and "Be brief." in prompt_text(smol, own)
    plain = build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder)
    assert "system" not in prompt_text(tiny_llm, plain)


@pytest.mark.parametrize("mode", BUDGET_MODES)
def test_budget_prompts_ask_the_question_once(tiny_llm, chunks, embedder, mode):
    raw = build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="raw"), 2, 8)
    assert prompt_text(tiny_llm, raw).count(QUESTION) == 2  # raw keeps the standard frame
    cfg = AskConfig(mode=mode, budget=int(0.6 * raw.positions))
    text = prompt_text(tiny_llm, build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder))
    assert text.count(QUESTION) == 1 and "Answer the question" not in text
    standard = replace(cfg, frame="standard")
    old = build_prompt(tiny_llm, QUESTION, chunks, standard, 2, 8, embedder)
    assert prompt_text(tiny_llm, old).count(QUESTION) == 2


def test_a_chunk_not_read_takes_no_positions(tiny_llm, chunks, embedder):
    """A budget of the frame with chunk 0's slot alone (its source line too) and chunk 0's
    best span: spans reads that span, the prompt takes the budget exactly and chunk 1 is
    nowhere; the standard frame, which keeps a slot for chunk 1 as well, cannot read it."""
    cfg = AskConfig(mode="spans", scorer="lexical", source_lines=True)
    req = request(tiny_llm, chunks, cfg)
    best = max(scored_spans(req), key=lambda s: s.score)
    assert best.chunk == 0
    assert req.frame_positions({0}, 2) < req.frame_positions({0, 1}, 2)
    budget = req.frame_positions({0}, 2) + len(tiny_llm.tokenize(best.text))
    cfg = replace(cfg, budget=budget)
    prompt = build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder)
    assert prompt.expanded == [best] and prompt.chunks_read == 1 and prompt.positions == budget
    text = prompt_text(tiny_llm, prompt)
    assert "[doc0.txt]" in text and "[doc1.txt]" not in text
    old = build_prompt(tiny_llm, QUESTION, chunks, replace(cfg, frame="standard"), 2, 8, embedder)
    assert best not in old.expanded


def test_truncated_pays_a_chunks_slot_only_when_it_reads_it(tiny_llm, chunks):
    cfg = AskConfig(mode="truncated")
    req = request(tiny_llm, chunks, cfg)
    budget = req.frame_positions({0}, len(chunks)) + len(tiny_llm.tokenize(chunks[0].text))
    prompt = build_prompt(tiny_llm, QUESTION, chunks, replace(cfg, budget=budget), 2, 8)
    assert prompt.chunks_read == 1 and prompt.positions == budget
    assert chunks[0].text in prompt_text(tiny_llm, prompt)  # whole: no slot held for chunk 1
    standard = replace(cfg, budget=budget, frame="standard")
    old = build_prompt(tiny_llm, QUESTION, chunks, standard, 2, 8)
    assert chunks[0].text not in prompt_text(tiny_llm, old)  # cut: chunk 1's slot is held


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("mode", BUDGET_MODES)
def test_every_budget_prompt_keeps_to_its_budget(tiny_llm, chunks, embedder, mode, frame):
    none = build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="none"), 2, 8)
    raw = build_prompt(tiny_llm, QUESTION, chunks, AskConfig(mode="raw"), 2, 8)
    for budget in range(none.positions, raw.positions + 8, 9):
        cfg = AskConfig(mode=mode, budget=budget, frame=frame)
        prompt = build_prompt(tiny_llm, QUESTION, chunks, cfg, 2, 8, embedder)
        assert prompt.positions <= budget, (mode, frame, budget)

"""Decoding from mixed prompts: matches transformers' own greedy search on raw prompts,
places embeddings inside the user turn, streams text."""

import torch

from extok_rag.config import GenerationConfig
from extok_rag.models.generation import (
    generate_batch,
    generate_ids,
    generate_text,
    stream_text,
)
from extok_rag.models.mixed_input import EmbeddingSegment, TokenSegment


def test_greedy_equals_transformers_generate(tiny_llm):
    row = tiny_llm.chat_row(["Tell me a story about a cat."])
    ours = list(generate_ids(tiny_llm, row, GenerationConfig(max_new_tokens=12)))
    prompt = torch.cat([seg.ids for seg in row])[None]
    theirs = tiny_llm.model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=sorted(tiny_llm.eos_token_ids),
        pad_token_id=0,
    )[0, prompt.shape[1] :].tolist()
    theirs = [t for t in theirs if t not in tiny_llm.eos_token_ids]
    assert ours == theirs[: len(ours)]
    assert len(ours) == 12 or len(ours) == len(theirs)


def test_batched_greedy_equals_one_row_at_a_time(tiny_llm):
    emb = torch.randn(5, tiny_llm.hidden_size)
    rows = [
        tiny_llm.chat_row(["Tell me a story about a cat."]),
        tiny_llm.chat_row(["Context: ", emb, " Short?"]),
        tiny_llm.chat_row(["A much longer question, padded less than the others are, surely?"]),
    ]
    cfg = GenerationConfig(max_new_tokens=10)
    one_by_one = [list(generate_ids(tiny_llm, row, cfg)) for row in rows]
    assert generate_batch(tiny_llm, rows, 10) == one_by_one


def test_chat_row_puts_embeddings_inside_the_user_turn(tiny_llm):
    emb = torch.randn(3, tiny_llm.hidden_size)
    row = tiny_llm.chat_row(["Context: ", emb, " Question?"], system="Be brief.")
    kinds = [type(seg).__name__ for seg in row]
    assert kinds == ["TokenSegment", "EmbeddingSegment", "TokenSegment"]
    before = tiny_llm.tokenizer.decode(row[0].ids)
    after = tiny_llm.tokenizer.decode(row[2].ids)
    assert before.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert before.endswith("Context: ")
    assert after == " Question?<|im_end|>\n<|im_start|>assistant\n"
    assert torch.equal(row[1].embeds, emb)


def test_text_only_chat_row_is_the_chat_template(tiny_llm):
    row = tiny_llm.chat_row(["Hi"])
    expected = tiny_llm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert len(row) == 1 and tiny_llm.tokenizer.decode(row[0].ids) == expected


def test_generation_with_embedding_segments_streams_text(tiny_llm):
    row = [
        TokenSegment(tiny_llm.tokenize("abc")),
        EmbeddingSegment(torch.randn(4, tiny_llm.hidden_size)),
        TokenSegment(tiny_llm.tokenize("def")),
    ]
    cfg = GenerationConfig(max_new_tokens=8)
    pieces = list(stream_text(tiny_llm, row, cfg))
    ids = list(generate_ids(tiny_llm, row, cfg))
    assert 0 < len(ids) <= 8
    assert "".join(pieces) == tiny_llm.tokenizer.decode(ids, skip_special_tokens=True)


def test_sampling_is_reproducible_with_a_seed(tiny_llm):
    row = tiny_llm.chat_row(["Once upon a time"])
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    assert generate_text(tiny_llm, row, cfg) == generate_text(tiny_llm, row, cfg)


def test_a_loop_is_detected_once_a_run_repeats_right_after_itself():
    from extok_rag.models.generation import loops

    run = [5, 6, 7, 8, 9, 10, 11, 12]
    assert loops([1, 2, *run, *run], 8) and loops([*run, *run], 4)
    assert not loops([1, 2, *run, *run[:-1]], 8)  # the second copy is not complete
    assert not loops([1, 2, 1, 2, 1, 2], 8)  # shorter runs than the guard's
    assert not loops([*run, *run], 0)


def test_decoding_stops_at_a_loop_in_both_paths(tiny_llm):
    """The tiny LLM answers "\\n" forever: with the guard it stops after two runs of 8."""
    rows = [tiny_llm.chat_row(["Tell me a story about a cat."])]
    guarded = list(generate_ids(tiny_llm, rows[0], GenerationConfig(max_new_tokens=40)))
    endless = GenerationConfig(max_new_tokens=40, repeat_stop=0)
    assert len(guarded) == 16 and len(list(generate_ids(tiny_llm, rows[0], endless))) == 40
    assert generate_batch(tiny_llm, rows, 40) == [guarded]
    assert len(generate_batch(tiny_llm, rows, 40, repeat_stop=0)[0]) == 40
    stream = stream_text(tiny_llm, rows[0], GenerationConfig(max_new_tokens=40))
    "".join(stream)
    assert stream.tokens == 16 and stream.finish_reason == "stop"

"""The helpers of benchmarks/online_table3.py and benchmarks/online_recall.py: windows drawn the
same for every row, positions each row takes, the recall facts and filler, and the raw reader
the truncation and raw rows answer through."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import online_recall as recall
import online_table3 as table3

from extok_rag.ask.online import OnlineConfig
from extok_rag.config import TokenizerConfig
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer


def test_window_ends_are_seeded_far_enough_apart_and_leave_room_for_the_longest_window():
    ends = table3.draw_ends(total=10_000, span=4_096, windows=6, seed=3)
    assert ends == table3.draw_ends(total=10_000, span=4_096, windows=6, seed=3)
    assert ends == sorted(ends) and all(4_096 <= e <= 10_000 for e in ends)
    assert all(b - a >= table3.TARGET for a, b in itertools.pairwise(ends))
    with pytest.raises(ValueError):
        table3.draw_ends(total=5_000, span=4_096, windows=4, seed=0)


def test_row_positions_match_the_paper_rows_and_the_window():
    window = 8192
    assert table3.row_positions("online-x8", 32768, window) == 63 * 64 + 512
    assert table3.fits("online-x32", 65536, window)
    assert not table3.fits("online-x8", 65536, window)  # 127 * 64 + 512 = 8,640
    assert not table3.fits("raw", 16384, window) and table3.fits("truncation", 65536, window)
    for n in (16384, 32768):  # the most recent whole sessions raw, the rest at x8, all fitting
        recent = table3.recent_tokens(n, 8, window)
        assert recent % table3.SESSION == 0 and table3.fits("online-x8-recent", n, window)
        longer = (n - 512 - recent - 512) // 512 * 64 + recent + 512 + 512
        assert longer > window  # one more raw session would not fit
    assert table3.recent_tokens(8192, 8, window) == 8192 - 512  # it all fits raw


def test_facts_are_seeded_distinct_and_one_of_each_kind_per_conversation():
    groups = recall.make_facts(4, seed=0)
    assert groups == recall.make_facts(4, seed=0) and groups != recall.make_facts(4, seed=1)
    values = [f.value for g in groups for f in g]
    assert len(set(values)) == len(values) == 4 * len(recall.FACT_KINDS)
    for group in groups:
        assert [f.question for f in group] == [q for _, q, _ in recall.FACT_KINDS]
        assert all(f.value in f.statement for f in group)
    assert recall.recalled("Your locker code is 4417.", recall.Fact("", "", "4417"))
    assert not recall.recalled("I do not know.", recall.Fact("", "", "Zorblax"))


def test_filler_alternates_turns_and_reaches_the_length():
    pool = ["one two three four", "five six seven", "eight nine"]
    count = lambda text: len(text.split())  # noqa: E731
    text = recall.filler_turns(pool, start=2, n_tokens=20, count=count)
    turns = text.splitlines()
    assert turns[0] == "User: eight nine" and turns[1] == "Assistant: one two three four"
    assert all(t.startswith(("User: ", "Assistant: ")) for t in turns)
    assert [t.split(":")[0] for t in turns] == ["User", "Assistant"] * (len(turns) // 2) + [
        "User"
    ] * (len(turns) % 2)
    assert count(text) >= 20 and count(text) - count(turns[-1] + "\n") < 20
    assert recall.paragraphs("a\n\n  " + "long " * 20 + "\n  line\n\nshort") == [
        " ".join(["long"] * 20 + ["line"])
    ]


def test_the_raw_reader_reads_the_conversation_as_one_raw_forward(tiny_llm):
    tokenizer = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))
    cfg = OnlineConfig(session_tokens=48, question_tokens=16, answer_tokens=8, frame="none")
    reader = recall.raw_reader(tiny_llm, tokenizer, cfg)
    ids = torch.randint(3, 259, (130,), generator=torch.Generator().manual_seed(0))
    reader.read(ids[:100])
    assert reader.positions == 100  # every token kept raw
    full = tiny_llm.model(input_ids=ids[None]).logits[0]  # (130, V)
    torch.testing.assert_close(reader.logits(ids[100:]), full[100:], atol=1e-4, rtol=1e-4)


def test_recent_sessions_kept_raw_follow_the_condensed_ones(tiny_llm):
    tokenizer = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))
    cfg = OnlineConfig(session_tokens=48, question_tokens=16, answer_tokens=8, frame="none")
    reader = table3.raw_tail_reader()(tiny_llm, tokenizer, 4, cfg)
    ids = torch.randint(3, 259, (200,), generator=torch.Generator().manual_seed(1))
    reader.read(ids[:96])  # two sessions, condensed at x4: 24 positions
    history = torch.cat([reader.condense(s) for s in ids[:96].split(48)])  # (24, d)
    reader.raw = True
    reader.read(ids[96:160])  # kept raw: 64 positions
    assert reader.positions == 24 + 64
    embeds = torch.cat([history, tiny_llm.embed_tokens(ids[96:200])])[None]  # (1, 128, d)
    full = tiny_llm.model(inputs_embeds=embeds).logits[0]  # (128, V)
    torch.testing.assert_close(reader.logits(ids[160:]), full[88:], atol=1e-4, rtol=1e-4)

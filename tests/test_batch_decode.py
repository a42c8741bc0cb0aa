"""Continuous batching (`DecodeBatch`): rows that join at different steps and leave at their
own ends get exactly the tokens `generate_ids` gives each one alone (tiny model, float32 and
bf16)."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from extok_rag.config import GenerationConfig
from extok_rag.errors import InputTooLongError
from extok_rag.models.batch_decode import DecodeBatch, Emitted
from extok_rag.models.generation import generate_ids
from extok_rag.models.mixed_input import row_length


def prompts(llm) -> dict[str, list]:
    torch.manual_seed(0)
    emb = torch.randn(5, llm.hidden_size)
    return {
        "story": llm.chat_row(["Tell me a story about a cat."]),
        "mixed": llm.chat_row(["Context: ", emb, " Short?"]),
        "long": llm.chat_row(["A much longer question, padded less than the others, surely?"]),
        "two": llm.chat_row(["First ", torch.randn(3, llm.hidden_size), " then ", emb, " ok?"]),
    }


def drive(llm, schedule: dict, cancel: dict | None = None) -> dict[str, list[int]]:
    """Run a DecodeBatch: at iteration s, rows `cancel[s]` are removed, every live row steps,
    then rows `schedule[s]` ((key, row, cfg) each) join. The tokens each row got."""
    batch, cancel = DecodeBatch(llm), cancel or {}
    got: dict[str, list[int]] = defaultdict(list)
    s = 0
    while s <= max(schedule) or len(batch):
        batch.remove(cancel.get(s, []))
        for e in batch.step() + batch.admit(schedule.get(s, [])):
            if e.token is not None:
                got[e.key].append(e.token)
            assert e.count == len(got[e.key])
            assert (e.key in batch.keys) != e.done
        if len(batch):  # every row's cache from column 0
            assert bool(batch.mask[:, 0].all()) and batch.mask.shape[0] == len(batch)
        s += 1
    return dict(got)


def alone(llm, row, cfg) -> list[int]:
    return list(generate_ids(llm, row, cfg))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rows_joining_at_different_steps_match_generate_ids(tiny_llm, tiny_llm_dir, dtype):
    """Also in bf16, where a padded batch once rounded a row by its neighbours' lengths."""
    from extok_rag.config import RuntimeConfig
    from extok_rag.models.llm import FrozenLLM

    if dtype == "bfloat16":
        tiny_llm = FrozenLLM.load(tiny_llm_dir, RuntimeConfig(device="cpu", dtype=dtype))
    rows = prompts(tiny_llm)
    cfgs = {
        k: GenerationConfig(max_new_tokens=n) for k, n in zip(rows, (14, 9, 12, 6), strict=True)
    }
    schedule = {
        0: [("story", rows["story"], cfgs["story"])],
        3: [("mixed", rows["mixed"], cfgs["mixed"])],
        5: [(k, rows[k], cfgs[k]) for k in ("long", "two")],
    }
    expected = {k: alone(tiny_llm, rows[k], cfgs[k]) for k in rows}
    assert len(expected["story"]) > 5  # the first row is still decoding when the others join
    got = drive(tiny_llm, schedule)
    assert {k: got.get(k, []) for k in rows} == expected


def test_a_cancelled_row_leaves_without_changing_the_others(tiny_llm):
    rows = prompts(tiny_llm)
    cfg = GenerationConfig(max_new_tokens=12, repeat_stop=0)
    schedule = {0: [(k, rows[k], cfg) for k in ("story", "long")], 2: [("two", rows["two"], cfg)]}
    got = drive(tiny_llm, schedule, cancel={4: ["long"]})
    expected = {k: alone(tiny_llm, rows[k], cfg) for k in rows}
    assert got["story"] == expected["story"] and got["two"] == expected["two"]
    assert got["long"] == expected["long"][:4]  # four steps (0-3), then gone


def test_sampling_rows_reproduce_generate_ids_with_their_seeds(tiny_llm):
    rows = prompts(tiny_llm)
    cfgs = {
        "story": GenerationConfig(max_new_tokens=10, temperature=0.9, top_p=0.9, seed=7),
        "mixed": GenerationConfig(max_new_tokens=10),  # greedy, between the sampled ones
        "long": GenerationConfig(max_new_tokens=8, temperature=1.3, seed=11),
    }
    schedule = {0: [("story", rows["story"], cfgs["story"])]}
    schedule[1] = [(k, rows[k], cfgs[k]) for k in ("mixed", "long")]
    got = drive(tiny_llm, schedule)
    assert got == {k: alone(tiny_llm, rows[k], cfg) for k, cfg in cfgs.items()}


def test_rows_end_at_end_of_turn_and_at_one_token(tiny_llm):
    """A row whose first token ends its turn leaves with no token; a one-token row leaves
    after it, and the columns only it used go with it."""
    rows = prompts(tiny_llm)
    batch = DecodeBatch(tiny_llm)
    batch.stop = batch.stop | {alone(tiny_llm, rows["story"], GenerationConfig(1))[0]}
    out = batch.admit([("eot", rows["story"], GenerationConfig(5))])
    assert out == [Emitted("eot", None, True, 0)] and len(batch) == 0 and batch.mask is None
    batch = DecodeBatch(tiny_llm)
    out = batch.admit(
        [("one", rows["long"], GenerationConfig(1)), ("on", rows["mixed"], GenerationConfig(5))]
    )
    assert [(e.key, e.done, e.count) for e in out] == [("one", True, 1), ("on", False, 1)]
    assert batch.keys == ["on"] and batch.mask.shape == (1, row_length(rows["mixed"]))
    assert bool(batch.mask.all())


def test_check_refuses_a_row_whose_answer_cannot_fit(tiny_llm):
    row = prompts(tiny_llm)["story"]
    batch = DecodeBatch(tiny_llm)
    batch.check(row, GenerationConfig(8))
    with pytest.raises(InputTooLongError):
        batch.check(row, GenerationConfig(tiny_llm.max_positions))

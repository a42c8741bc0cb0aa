"""Frame objectives (qa / span / reconstruction / distill), the answer probe, objective mixing,
and the vocabulary head computed only at scored positions — on the tiny Llama."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from extok_rag import config as config_module
from extok_rag.config import (
    AdapterConfig,
    MixPhase,
    RuntimeConfig,
    TokenizerConfig,
    TrainConfig,
    fastest_dtype,
)
from extok_rag.datasets.training_files import QAExample
from extok_rag.models.ask_frame import ask_frame
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.mixed_input import EmbeddingSegment, TokenSegment
from extok_rag.spans import token_starts
from extok_rag.training import batches, schedule
from extok_rag.training.answer_probe import (
    AnswerProbe,
    ReconstructionProbe,
    gap_closed,
    in_company,
)
from extok_rag.training.frame import (
    BLANK,
    FrameData,
    FrameExample,
    answer_row,
    bare_rows,
    compressed_rows,
    expand_rows,
    qa_example,
    raw_rows,
    rotated,
    span_candidates,
    span_example,
    text_tokens,
    truncate_text,
)
from extok_rag.training.objective import contrast_losses, distill_losses, row_losses
from extok_rag.training.trainer import Trainer

PARAGRAPHS = [
    "Ada Lovelace wrote notes in 1843. She worked with Charles Babbage on the engine.",
    "The river Thames flows through London. It is 346 kilometres long in total.",
    "Marie Curie won two Nobel Prizes. Her first came in 1903 for physics research.",
    "Mount Kenya is the second highest peak in Africa. It rises to 5199 metres high.",
]
QA = [
    QAExample(f"q{i}", f"What is in paragraph {i}?", p.split()[0], (p,), (PARAGRAPHS[i - 1],))
    for i, p in enumerate(PARAGRAPHS)
]

CFG = TrainConfig(
    tokenizer=TokenizerConfig(
        num_layers=2, adapter=AdapterConfig("rmsnorm_linear", standardize=True)
    ),
    seq_len=64,
    chunk_len=16,
    k_choices=(2, 4),
    max_steps=4,
    grad_accum=2,
    warmup_steps=1,
    lora_rank=4,
    probe_every=0,
    checkpoint_every=2,
    stats_sequences=4,
    lr=1e-2,
    adapter_lr=1e-2,
    frame_rows=2,
    context_len=40,
    recon_len=24,
    recon_chunks=(1, 2),
    recon_curriculum_steps=2,
    answer_probe_every=2,
    answer_probe_items=3,
    answer_probe_ks=(2, 4),
    mix=(
        MixPhase({"reconstruction": 1.0}, steps=1),
        MixPhase({"qa": 1.0, "span": 1.0, "distill": 1.0, "ar": 1.0}),
    ),
    dtype="float32",
)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return (
        rng.integers(3, 259, size=(12, 64), dtype=np.int64),
        rng.integers(3, 259, size=(4, 64), dtype=np.int64),
    )


@pytest.fixture
def frame():
    return FrameData(QA, PARAGRAPHS)


@pytest.fixture
def tok(tiny_llm):
    return ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=1))


# -- the head only where scored ---------------------------------------------------------------
def test_token_losses_equal_full_vocabulary_logits(tiny_llm):
    rows = [
        [TokenSegment(torch.arange(5, 25), scored=False), TokenSegment(torch.arange(30, 36))],
        [TokenSegment(torch.arange(40, 50))],
    ]
    batch = tiny_llm.batch(rows)
    full = tiny_llm.logits(batch)[:, :-1].float()
    expected = (
        F.cross_entropy(full.transpose(1, 2), batch.labels[:, 1:].clamp(min=0), reduction="none")
        * batch.next_token_targets
    )
    torch.testing.assert_close(tiny_llm.token_losses(batch), expected)
    assert tiny_llm.scored_logits(batch).shape[0] == int(batch.next_token_targets.sum()) == 6 + 9


def test_fastest_dtype_follows_the_hardware(monkeypatch):
    assert fastest_dtype("cuda") == "bfloat16"
    monkeypatch.setattr(config_module, "cpu_has_native_bf16", lambda: False)
    assert fastest_dtype("cpu") == "float32"
    monkeypatch.setattr(config_module, "cpu_has_native_bf16", lambda: True)
    assert fastest_dtype("cpu") == "bfloat16"
    assert replace(CFG, dtype="auto").resolved_dtype("cuda") == "bfloat16"
    assert RuntimeConfig(device="cpu").resolve_dtype() == "bfloat16"  # the same rule
    monkeypatch.setattr(config_module, "cpu_has_native_bf16", lambda: False)
    assert RuntimeConfig(device="cpu").resolve_dtype() == "float32"
    assert RuntimeConfig(device="cpu", dtype="bfloat16").resolve_dtype() == "bfloat16"


# -- examples and rows ------------------------------------------------------------------------
def test_text_tokens_are_tokenised_once_and_cut_as_before(tiny_llm, monkeypatch):
    """A text's cut ids, cut text and token starts come from one tokenisation per process, and
    are what tokenising it each time gave: the text itself when it fits, else its first ids
    decoded back; expand rows' starts are those of the cut ids decoded back."""
    text = "The tower was built in 1889 by Gustave Eiffel's company. It is 330 metres tall."
    calls = []
    real = type(tiny_llm).tokenize
    monkeypatch.setattr(type(tiny_llm), "tokenize", lambda llm, t: calls.append(t) or real(llm, t))
    ids = real(tiny_llm, text)
    for cut in (1000, 20):
        first = text_tokens(tiny_llm, text, cut, starts=True)
        again = text_tokens(tiny_llm, text, cut)
        assert again is first and calls.count(text) == (1 if cut == 1000 else 2)
        assert torch.equal(first.ids, ids[:cut])
        decoded = tiny_llm.tokenizer.decode(ids[:cut].tolist())
        expected = text if cut == 1000 else decoded
        assert first.text == expected == truncate_text(tiny_llm, text, cut)
        assert first.decoded == decoded
        starts = token_starts(tiny_llm.tokenizer, decoded, len(first.ids))
        assert np.array_equal(first.starts, starts)


def test_span_candidates_find_numbers_and_names():
    sentence = "In 1843 the engine of Charles Babbage was described by Ada Lovelace."
    spans = {sentence[a:b] for a, b in span_candidates(sentence)}
    assert {"1843", "Charles Babbage", "Ada Lovelace"} <= spans
    example = span_example(PARAGRAPHS[1], random.Random(0))
    assert example is not None and example.contexts == (PARAGRAPHS[1],)
    assert BLANK in example.question and example.answer in PARAGRAPHS[1]
    filled = example.question.split('"')[1].replace(BLANK, example.answer)
    assert filled in PARAGRAPHS[1]


def test_qa_example_holds_gold_and_distractors():
    example = qa_example(QA[2], random.Random(1), distractors=1)
    assert set(example.contexts) == {PARAGRAPHS[2], PARAGRAPHS[1]}
    assert example.answer == "Marie"


def test_compressed_row_is_the_ask_frame_and_scores_only_the_answer(tiny_llm, tok):
    example = FrameExample((PARAGRAPHS[0], PARAGRAPHS[1]), "Who wrote notes?", "Ada")
    (row,) = compressed_rows(tiny_llm, tok, [example], [4], max_tokens=40)
    embeds = tok.compress(tiny_llm.tokenize(PARAGRAPHS[0])[:40], k=4, chunk_len=40)
    expected = answer_row(
        tiny_llm, ask_frame(example.question, [embeds[0], torch.zeros(10, 64)]), "Ada"
    )
    assert [type(s) for s in row] == [type(s) for s in expected]
    assert torch.equal(row[1].embeds, embeds[0])
    assert [len(s) for s in row] == [len(s) for s in expected]
    scored = [s for s in row if isinstance(s, TokenSegment) and s.scored]
    assert len(scored) == 1 and tiny_llm.tokenizer.decode(scored[0].ids) == "Ada"
    assert row_losses(tiny_llm, [row]).count.tolist() == [3]
    assert sum(isinstance(s, EmbeddingSegment) for s in row) == 2


def test_distill_is_zero_against_itself_and_trains_the_student(tiny_llm, tok):
    examples = [FrameExample((p,), "What?", p.split()[1]) for p in PARAGRAPHS[:2]]
    teacher = raw_rows(tiny_llm, examples, 40)
    same = distill_losses(tiny_llm, teacher, teacher)
    assert same.nll.abs().max() < 1e-4 and same.count.tolist() == [
        len(tiny_llm.tokenize(e.answer)) for e in examples
    ]
    tok.requires_grad_(False)
    tok.adapter = None
    param = next(tok.encoder.layers[0].parameters())
    param.requires_grad_(True)
    student = compressed_rows(tiny_llm, tok, examples, [2, 2], 40)
    loss = distill_losses(tiny_llm, student, teacher)
    assert float(loss.mean().detach()) > 0
    loss.mean().backward()
    assert param.grad is not None and param.grad.abs().sum() > 0


# -- the content contrast ---------------------------------------------------------------------
def embeds_of(row) -> list[torch.Tensor]:
    return [s.embeds for s in row if isinstance(s, EmbeddingSegment)]


def test_contrast_rows_read_each_question_over_the_next_examples_paragraphs(
    tiny_llm, data, frame, tmp_path
):
    """With a contrast weight, qa / expand batches keep the very rows (and draws) of a run
    without one, and add each question over the next example's paragraphs at its own k (and
    expand share), and with no context; other objectives add nothing."""
    base = replace(CFG, answer_probe_every=0, frame_rows=3)
    runs = [
        Trainer(c, tiny_llm, *data, tmp_path / d, frame, QA)
        for c, d in ((base, "a"), (replace(base, contrast_weight=1.0), "b"))
    ]
    runs[1].tokenizer.load_state_dict(runs[0].tokenizer.state_dict())
    for objective in ("qa", "expand", "span", "distill"):
        rng = [random.Random(f"frame:{base.seed}:1") for _ in runs]
        examples = runs[0].frame_examples(objective, rng[0], 3)
        assert examples == runs[1].frame_examples(objective, rng[1], 3)
        plain, contrast = (
            batches.frame_rows(tiny_llm, t.tokenizer, t.cfg, examples, r, objective)
            for t, r in zip(runs, rng, strict=True)
        )
        assert plain.ks == contrast.ks and rng[0].random() == rng[1].random()
        for a, b in zip(plain.rows, contrast.rows, strict=True):
            assert all(
                torch.allclose(x, y, atol=1e-5)
                for x, y in zip(embeds_of(a), embeds_of(b), strict=True)
            )
        if objective in ("span", "distill"):
            assert contrast.other is None and contrast.bare is None
            continue
        other = rotated(examples)
        assert [ex.contexts for ex in other] == [examples[(i + 1) % 3].contexts for i in range(3)]
        assert [ex.question for ex in other] == [ex.question for ex in examples]
        tok = runs[1].tokenizer
        if objective == "qa":
            expected = compressed_rows(tiny_llm, tok, other, contrast.ks, CFG.context_len)
        else:  # the shares: drawn after the ks, one per example
            again = random.Random(f"frame:{base.seed}:1")
            runs[1].frame_examples(objective, again, 3)
            [again.choice(base.k_choices) for _ in range(3)]
            shares = [again.uniform(*base.expand_share) for _ in range(3)]
            expected = expand_rows(tiny_llm, tok, other, contrast.ks, shares, CFG.context_len)
        for a, b in zip(contrast.other, expected, strict=True):
            assert [type(s) for s in a] == [type(s) for s in b]
            assert all(
                torch.allclose(x, y, atol=1e-5)
                for x, y in zip(embeds_of(a), embeds_of(b), strict=True)
            )
        bare = bare_rows(tiny_llm, examples)
        assert [[len(s) for s in r] for r in contrast.bare] == [[len(s) for s in r] for r in bare]
        assert not any(embeds_of(r) for r in contrast.bare)


def test_contrast_hinge_penalises_only_a_gain_over_no_context(tiny_llm, tok):
    """penalty_i = weight * max(0, NLL(floor_i) - NLL(other_i)), with grad only through the
    other rows; the own rows' NLL stays the loss reported. Two readings of the other rows
    (k 2 and 4) serve as each other's floor, so in every row one of the two hinges is live."""
    examples = [FrameExample((p,), "What?", p.split()[1]) for p in PARAGRAPHS[:3]]
    tok.requires_grad_(False)
    tok.adapter = None
    param = next(tok.encoder.layers[0].parameters())
    param.requires_grad_(True)

    def rows():  # a fresh graph for each backward
        own = compressed_rows(tiny_llm, tok, examples, [2, 2, 2], 40)
        reads = [compressed_rows(tiny_llm, tok, rotated(examples), [k] * 3, 40) for k in (2, 4)]
        return own, reads

    own, reads = rows()
    with torch.no_grad():
        nll = [row_losses(tiny_llm, r).nll for r in reads]
    penalties = []
    for weight, (i, j) in zip((0.5, 2.0), ((0, 1), (1, 0)), strict=True):
        param.grad = None
        own, reads = rows()
        got = contrast_losses(tiny_llm, own, reads[i], reads[j], weight)
        torch.testing.assert_close(got.nll, row_losses(tiny_llm, own).nll, rtol=1e-4, atol=1e-4)
        expected = weight * (nll[j] - nll[i]).clamp(min=0)
        torch.testing.assert_close(got.penalty.detach(), expected, rtol=1e-4, atol=1e-4)
        total = got.mean() + expected.sum() / got.count.sum()
        torch.testing.assert_close(got.objective().detach(), total, rtol=1e-4, atol=1e-4)
        got.penalty.sum().backward()  # through reads[i] alone, and only where live
        live = bool((expected > 0).any())
        assert (param.grad is not None and bool(param.grad.abs().sum() > 0)) == live
        penalties.append(expected)
    assert bool(((penalties[0] > 0) | (penalties[1] > 0)).all())
    bare = bare_rows(tiny_llm, examples)  # the floor training uses: no embeddings at all
    assert not any(embeds_of(r) for r in bare)
    assert contrast_losses(tiny_llm, own, reads[0], bare, 1.0).penalty.shape == (3,)
    with pytest.raises(ValueError, match="contrast_weight"):
        replace(CFG, contrast_weight=-1.0)
    with pytest.raises(ValueError, match="frame_rows"):
        replace(CFG, contrast_weight=1.0, frame_rows=1)


def test_a_contrast_run_logs_its_hinge_and_trains(tiny_llm, data, frame, tmp_path):
    cfg = replace(
        CFG,
        answer_probe_every=0,
        contrast_weight=1.0,
        frame_rows=3,
        mix=(MixPhase({"qa": 1.0, "expand": 1.0, "span": 1.0}),),
    )
    trainer = Trainer(cfg, tiny_llm, *data, tmp_path, frame, QA)
    trainer.run(stop_at=3)
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 3 and all(np.isfinite(r["loss"]) for r in steps)
    for r in steps:
        assert ("contrast" in r) == bool({"qa", "expand"} & set(r["objectives"]))
        assert r.get("contrast", 0.0) >= 0


# -- the mixture in the trainer ---------------------------------------------------------------
def test_mixture_follows_its_phases(tiny_llm, data, frame, tmp_path):
    trainer = Trainer(replace(CFG, answer_probe_every=0), tiny_llm, *data, tmp_path, frame)
    first = {trainer.objective_for(g) for g in range(CFG.grad_accum)}
    later = {trainer.objective_for(g) for g in range(CFG.grad_accum, 60)}
    assert first == {"reconstruction"}
    assert later == {"qa", "span", "distill", "ar"}
    before = {n: p.clone() for n, p in tiny_llm.model.named_parameters()}
    for _ in range(2):
        stats = trainer.train_step()
        assert np.isfinite(stats.loss) and stats.objective_losses
        framed = set(stats.objective_losses) != {"ar"}  # rows built on the host: timed
        assert (0 < stats.build_seconds < stats.seconds) if framed else not stats.build_seconds
    for name, param in tiny_llm.model.named_parameters():
        assert torch.equal(param, before[name]), name


def test_answer_ratios_read_the_same_examples_at_their_own_ks(tiny_llm, data, frame, tmp_path):
    """`answer_k_choices`: the QA objectives' rows map their k_choices draw onto that set
    (`expand_k_choices`, where set, for expand's), the other objectives keep it, and both runs
    read the same examples (a paired variant)."""
    base = replace(CFG, answer_probe_every=0, k_choices=(1, 2, 4, 8), frame_rows=4)
    variant = replace(base, answer_k_choices=(4, 8), expand_k_choices=(16, 32))
    runs = [
        Trainer(c, tiny_llm, *data, tmp_path / d, frame, QA)
        for c, d in ((base, "a"), (variant, "b"))
    ]
    seen = {}
    for objective in ("qa", "expand", "distill", "span", "reconstruction"):
        drawn = []
        for g in range(6):
            rng = [random.Random(f"frame:{base.seed}:{g}") for _ in runs]
            examples = [t.frame_examples(objective, r, 4) for t, r in zip(runs, rng, strict=True)]
            assert examples[0] == examples[1]
            rows = [
                batches.frame_rows(tiny_llm, t.tokenizer, t.cfg, ex, r, objective)
                for t, ex, r in zip(runs, examples, rng, strict=True)
            ]
            assert rows[1].ks == [variant.frame_k(objective, k) for k in rows[0].ks]
            drawn += rows[1].ks
        seen[objective] = set(drawn)
    assert seen["qa"] == seen["distill"] == {4, 8}
    assert seen["expand"] == {16, 32}
    assert {1, 2} <= seen["span"] | seen["reconstruction"]
    for name in ("answer_k_choices", "expand_k_choices"):
        with pytest.raises(ValueError, match=f"{name} .* must divide k_choices"):
            replace(base, **{name: (2, 4, 8)})
    loaded = TrainConfig.from_dict(
        {"k_choices": [1, 2, 4, 8], "answer_k_choices": [4, 8], "expand_k_choices": [32]}
    )
    assert (loaded.answer_k_choices, loaded.expand_k_choices) == ((4, 8), (32,))


def test_mixed_run_resumes_exactly_and_logs_the_answer_probe(tiny_llm, data, frame, tmp_path):
    straight = Trainer(CFG, tiny_llm, *data, tmp_path / "a", frame, QA)
    straight.run()
    first = Trainer(CFG, tiny_llm, *data, tmp_path / "b", frame, QA)
    first.run(stop_at=2)
    rest = Trainer(CFG, tiny_llm, *data, tmp_path / "b", frame, QA)
    assert rest.step == 2
    rest.run()
    for name, tensor in straight.tokenizer.state_dict().items():
        assert torch.equal(tensor, rest.tokenizer.state_dict()[name]), name
    log = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    probes = [r["answer_probe"] for r in log if "answer_probe" in r]
    assert len(probes) == 3  # step 0, 2, 4
    assert set(probes[0]) == {"nll_none", "nll_raw", "nll_k2", "nll_k4", "gap_k2", "gap_k4"} | {
        "nll_k4_other",  # ×4 with another item's paragraphs: content as the run trains
        "gap_k4_other",
    }
    assert probes[0]["nll_none"] == probes[-1]["nll_none"]
    assert next(set(r["objectives"]) for r in log if "loss" in r) == {"reconstruction"}


def test_init_from_a_checkpoint_takes_its_shape_and_weights(tiny_llm, data, frame, tmp_path):
    source = Trainer(replace(CFG, answer_probe_every=0), tiny_llm, *data, tmp_path / "a", frame)
    source.train_step()
    source.export(tmp_path / "ckpt")
    cfg = replace(CFG, answer_probe_every=0, init_from=str(tmp_path / "ckpt"))
    cfg = replace(cfg, tokenizer=TokenizerConfig(num_layers=3))  # replaced by the checkpoint's
    start = Trainer(cfg, tiny_llm, *data, tmp_path / "b", frame)
    assert start.cfg.tokenizer.num_layers == 2
    for name, tensor in source.tokenizer.delta_state_dict().items():
        assert torch.equal(tensor, start.tokenizer.state_dict()[name]), name


def test_a_full_mode_run_starts_from_a_lora_checkpoint_merged(tiny_llm, data, frame, tmp_path):
    source = Trainer(replace(CFG, answer_probe_every=0), tiny_llm, *data, tmp_path / "a", frame)
    source.train_step()
    source.export(tmp_path / "ckpt")
    cfg = replace(CFG, answer_probe_every=0, init_from=str(tmp_path / "ckpt"), train_mode="full")
    start = Trainer(cfg, tiny_llm, *data, tmp_path / "b", frame)
    names = [n for n, p in start.tokenizer.named_parameters() if p.requires_grad]
    assert not any(".lora_" in n for n in start.tokenizer.state_dict())
    assert any(n.startswith("encoder.layers.") for n in names)
    ids = torch.arange(3, 19).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(start.tokenizer(ids), source.tokenizer(ids))
    start.train_step()  # the merged layers themselves train now
    start.save_checkpoint()
    resumed = Trainer(cfg, tiny_llm, *data, tmp_path / "b", frame)
    assert resumed.step == start.step
    for name, tensor in start.tokenizer.state_dict().items():
        assert torch.equal(tensor, resumed.tokenizer.state_dict()[name]), name


def test_a_run_records_its_down_scale_and_the_index_pools_by_it(tiny_llm, data, frame, tmp_path):
    from extok_rag.indexing.encoding import ChunkEncoder

    cfg = replace(CFG, answer_probe_every=0, downscale="mean")
    Trainer(cfg, tiny_llm, *data, tmp_path / "a", frame).export(tmp_path / "ckpt")
    tokenizer = ExtensibleTokenizer.from_pretrained(tmp_path / "ckpt", tiny_llm)
    assert tokenizer.config.downscale == "mean"
    assert ChunkEncoder(tokenizer, embedder=None, stride=2).method == "mean"


# -- the answer probe -------------------------------------------------------------------------
def test_answer_probe_rows_and_gap(tiny_llm, tok):
    probe = AnswerProbe(QA[:3], ks=(2,), context_len=40, batch_size=2)
    detailed = probe.run_detailed(tiny_llm, tok)
    assert set(detailed) == {"none", "raw", "k2"}
    counts = [len(tiny_llm.tokenize(q.answer)) for q in QA[:3]]
    assert all(v.count.tolist() == counts for v in detailed.values())
    summary = probe.run(tiny_llm, tok)
    assert summary["gap_k2"] == pytest.approx(
        gap_closed(summary["nll_none"], summary["nll_raw"], summary["nll_k2"])
    )
    assert gap_closed(4.0, 2.0, 3.0) == 0.5
    assert "gap_k2_other" not in summary
    # `other_k`: each question over the next item's paragraphs, read as the contrast loss is
    probe = AnswerProbe(QA[:3], ks=(2,), context_len=40, batch_size=2, other_k=2)
    summary = probe.run(tiny_llm, tok)
    swapped = rotated([FrameExample(q.gold, q.question, q.answer) for q in QA[:3]])
    expected = row_losses(tiny_llm, compressed_rows(tiny_llm, tok, swapped, [2] * 3, 40))
    assert summary["nll_k2_other"] == pytest.approx(float(expected.mean()), rel=1e-4)
    assert summary["gap_k2_other"] == pytest.approx(
        gap_closed(summary["nll_none"], summary["nll_raw"], summary["nll_k2_other"])
    )


def test_answer_probe_greedy_accuracy(tiny_llm, tok, monkeypatch):
    """With `greedy_items`, the probe also decodes greedily and counts answers contained in the
    output; the none / raw baselines are decoded once per run."""
    from extok_rag.training import answer_probe

    items = [QA[0], QA[2], QA[3]]  # QA[1]'s answer, "The", normalises to nothing
    probe = AnswerProbe(items, ks=(2,), context_len=40, batch_size=2, greedy_items=2)
    got = probe.run(tiny_llm, tok)
    assert {"greedy_none", "greedy_raw", "greedy_k2"} <= set(got)
    assert all(0.0 <= got[k] <= 1.0 for k in ("greedy_none", "greedy_raw", "greedy_k2"))
    calls = []

    def answers(llm, rows, max_new_tokens):  # a model that always says the gold answer
        calls.append(len(rows))
        return [llm.tokenize(f"It is {q.answer}.").tolist() for q in items[: len(rows)]]

    monkeypatch.setattr(answer_probe, "generate_batch", answers)
    fresh = AnswerProbe(items, ks=(2,), context_len=40, batch_size=2, greedy_items=2)
    assert fresh.greedy(tiny_llm, tok) == {"greedy_none": 1.0, "greedy_raw": 1.0, "greedy_k2": 1.0}
    fresh.greedy(tiny_llm, tok)
    assert calls == [2, 2, 2, 2]  # none and raw once, k2 each run
    # `other_k` with greedy: also in company (raw once per run, compressed each run)
    calls.clear()
    company = AnswerProbe(items, ks=(2,), context_len=40, batch_size=2, greedy_items=2, other_k=2)
    want = {"greedy_none", "greedy_raw", "greedy_k2", "greedy_raw_company", "greedy_k2_company"}
    first = company.greedy(tiny_llm, tok)
    assert set(first) == want and all(v == 1.0 for v in first.values())
    assert company.greedy(tiny_llm, tok) == first
    assert calls == [2, 2, 2, 2, 2, 2, 2]  # none, raw, raw in company once; k2 twice a run


def test_in_company_reads_each_item_beside_the_next_at_either_end():
    examples = [FrameExample((f"p{i}a", f"p{i}b"), f"q{i}", f"a{i}") for i in range(3)]
    got = in_company(examples)
    assert [ex.contexts for ex in got] == [
        ("p0a", "p0b", "p1a", "p1b"),  # own first
        ("p2a", "p2b", "p1a", "p1b"),  # own last
        ("p2a", "p2b", "p0a", "p0b"),  # the last beside the first
    ]
    assert [(ex.question, ex.answer) for ex in got] == [(e.question, e.answer) for e in examples]


def test_reconstruction_probe_scores_each_paragraph_repeated_back(tiny_llm, tok):
    probe = ReconstructionProbe(QA[:3], ks=(2,), batch_size=2, recon_len=12)
    detailed = probe.run_detailed(tiny_llm, tok)
    assert set(detailed) == {"none", "raw", "k2"}
    cut = [tiny_llm.tokenize(q.gold[0])[:12] for q in QA[:3]]
    counts = [len(tiny_llm.tokenize(tiny_llm.tokenizer.decode(ids.tolist()))) for ids in cut]
    assert all(v.count.tolist() == counts for v in detailed.values())
    assert set(probe.run(tiny_llm, tok)) == {"nll_none", "nll_raw", "nll_k2", "gap_k2"}


def test_reconstruction_length_grows_over_the_curriculum(tiny_llm, data, frame, tmp_path):
    cfg = replace(CFG, answer_probe_every=0, recon_len_start=8, recon_len=24)
    trainer = Trainer(cfg, tiny_llm, *data, tmp_path, frame)
    lengths = []
    for step in (0, 1, 2, 5):
        trainer.step = step
        lengths.append(trainer.recon_length())
        examples = trainer.frame_examples("reconstruction", random.Random(0), 2)
        assert all(
            len(tiny_llm.tokenize(p)) <= lengths[-1] + 1 for e in examples for p in e.contexts
        )
    assert lengths == [8, 16, 24, 24]
    assert (
        Trainer(
            replace(cfg, recon_len_start=0), tiny_llm, *data, tmp_path / "b", frame
        ).recon_length()
        == 24
    )


def test_mix_phases_come_from_json():
    cfg = TrainConfig.from_dict(
        {**TrainConfig().to_dict(), "mix": [{"weights": {"qa": 2, "span": 1}, "steps": 0}]}
    )
    assert cfg.mix == (MixPhase({"qa": 2, "span": 1}),)
    assert cfg.phase_at(10_000).weights == {"qa": 2, "span": 1}
    with pytest.raises(ValueError):
        MixPhase({"nope": 1.0})
    assert TrainConfig(reconstruction_steps=3).phase_at(2).weights == {"chunk_reconstruction": 1.0}


def test_a_phase_set_as_a_share_of_the_budget_closes_once_it_is_spent():
    recon, mixture = MixPhase({"reconstruction": 1.0}, share=0.4), MixPhase({"ar": 1.0})
    cfg = TrainConfig(mix=(recon, mixture), max_minutes=10)  # 600 s: closes at 240 s
    assert cfg.phase_at(10_000) == recon and recon.open
    assert schedule.close_phase(cfg, 5, 239.0) == (cfg, None)
    closed, index = schedule.close_phase(cfg, 7, 240.0)
    assert index == 0 and closed.mix == (replace(recon, steps=7), mixture)
    assert [closed.phase_at(s) for s in (6, 7)] == [closed.mix[0], mixture]
    assert schedule.close_phase(closed, 9, 500.0) == (closed, None)
    assert schedule.close_phase(cfg, 0, 300.0)[0].mix[0].steps == 1  # at least one step
    # a checkpoint's closed phase comes back; a different phase at that place stays open
    assert schedule.with_saved_phases(cfg, closed.to_dict()["mix"]) == closed
    other = TrainConfig(mix=(MixPhase({"span": 1.0}, share=0.4), mixture), max_minutes=10)
    assert schedule.with_saved_phases(other, closed.to_dict()["mix"]) == other
    assert TrainConfig.from_dict(closed.to_dict()) == closed
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(mix=(recon, mixture))
    with pytest.raises(ValueError, match="share"):
        MixPhase({"ar": 1.0}, share=1.0)
    from extok_rag.cli.train_cmd import load_config  # the CLI's path: a one-line error
    from extok_rag.errors import ExtokError

    with pytest.raises(ExtokError, match=r"bad training config: .*max_minutes"):
        load_config([], ['mix=[{"weights": {"ar": 1}, "share": 0.4}]'])
    assert load_config([], ['mix=[{"weights": {"ar": 1}, "share": 0.4}]', "max_minutes=6"]).mix


def test_a_share_phase_closes_in_the_run_and_resumes_closed(tiny_llm, data, frame, tmp_path):
    mix = (MixPhase({"reconstruction": 1.0}, share=0.5), MixPhase({"ar": 1.0}))
    cfg = replace(CFG, answer_probe_every=0, mix=mix, max_minutes=1e6, max_steps=5)
    trainer = Trainer(cfg, tiny_llm, *data, tmp_path, frame)
    trainer.run(stop_at=2)
    assert trainer.cfg.mix[0].open  # the clock has not reached half the budget
    trainer.elapsed = 0.5 * cfg.max_minutes * 60  # as if it had
    events = []
    trainer.run(events.append, stop_at=3)
    assert trainer.cfg.mix[0].steps == 2
    closed = {"step": 2, "phase_closed": 0, "phase_steps": 2}
    assert events[0] == closed  # emitted, and logged
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert closed in log
    assert [set(r["objectives"]) for r in log if "loss" in r] == [{"reconstruction"}] * 2 + [{"ar"}]
    resumed = Trainer(cfg, tiny_llm, *data, tmp_path, frame)  # the config as written: open
    assert resumed.step == 3 and resumed.cfg.mix[0].steps == 2
    assert resumed.objective_for(2 * cfg.grad_accum) == "ar"


def test_budget_in_cpu_minutes_stops_the_run(tiny_llm, data, frame, tmp_path):
    cfg = replace(CFG, answer_probe_every=0, max_steps=50, max_minutes=1e-9, budget_clock="cpu")
    trainer = Trainer(cfg, tiny_llm, *data, tmp_path, frame)
    trainer.run()
    assert trainer.step == 1 and trainer.cpu_elapsed > 0
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["cpu_elapsed_s"] for r in log if "loss" in r] == [trainer.cpu_elapsed]


def test_a_merge_run_from_a_mean_checkpoint_starts_at_the_mean_and_trains_its_tree(
    tiny_llm, data, frame, tmp_path
):
    mean = replace(CFG, answer_probe_every=0, downscale="mean")
    Trainer(mean, tiny_llm, *data, tmp_path / "a", frame).export(tmp_path / "ckpt")
    cfg = replace(mean, init_from=str(tmp_path / "ckpt"), downscale="merge")
    start = Trainer(cfg, tiny_llm, *data, tmp_path / "b", frame)
    tree = start.tokenizer.merge
    states = torch.randn(2, 16, tiny_llm.config.hidden_size)
    with torch.no_grad():
        torch.testing.assert_close(
            start.tokenizer.downscale(states, 4), states.view(2, 4, 4, -1).mean(2)
        )
    weight = tree.levels[0].proj.weight
    (group,) = [g for g in start.optimizer.param_groups if any(p is weight for p in g["params"])]
    assert group["initial_lr"] == cfg.merge_lr and len(group["params"]) == len(tree.levels)
    start.train_step()
    assert tree.levels[0].proj.weight.abs().sum() > 0
    start.export(tmp_path / "merged")
    assert (
        ExtensibleTokenizer.from_pretrained(tmp_path / "merged", tiny_llm).config.downscale
        == "merge"
    )


def test_a_query_pool_run_trains_its_held_back_layer_in_every_objective(
    tiny_llm, data, frame, tmp_path
):
    """ARC-style pooled queries: the adapter's fits read the held-back layer at k = 1, every
    objective (expand's compressed runs included) trains that layer, and the export says so."""
    cfg = replace(
        CFG,
        answer_probe_every=0,
        train_mode="full",
        lora_rank=0,
        downscale="query_pool",
        adapter_init="regression",
        k_choices=(1, 2, 4),
        frame_rows=4,
    )
    trainer = Trainer(cfg, tiny_llm, *data, tmp_path, frame, QA)
    held_back = trainer.tokenizer.encoder.layers[1].self_attn.q_proj.weight
    assert held_back.requires_grad
    for objective in ("ar", "reconstruction", "span", "qa", "expand", "distill"):
        losses, _ = trainer.micro_step(0, objective)
        losses.mean().backward()
        assert held_back.grad is not None and held_back.grad.abs().sum() > 0, objective
        trainer.optimizer.zero_grad(set_to_none=True)
    trainer.train_step()
    trainer.export(tmp_path / "ckpt")
    loaded = ExtensibleTokenizer.from_pretrained(tmp_path / "ckpt", tiny_llm)
    assert loaded.config.downscale == "query_pool" and loaded.pools_queries


def test_the_reconstruction_probe_alone_loads_the_held_out_items(tmp_path):
    from extok_rag.cli.train_cmd import load_frame_data
    from extok_rag.datasets.training_files import ANSWER_PROBE_FILE, write_jsonl

    item = QAExample("q1", "Who wrote it?", "Ada", ("Ada wrote it.",))
    write_jsonl(tmp_path / ANSWER_PROBE_FILE, [item.to_json()])
    cfg = replace(CFG, mix=(), objective="ar", answer_probe_every=0, recon_probe_every=5)
    assert load_frame_data(cfg, tmp_path)[1] == [item]
    assert load_frame_data(replace(cfg, recon_probe_every=0), tmp_path)[1] is None


@pytest.mark.parametrize("downscale", [CFG.downscale, "query_pool"])
def test_a_micro_step_never_makes_the_host_wait_for_the_card(
    tiny_llm, data, frame, tmp_path, monkeypatch, downscale
):
    """Every objective's forward and backward reads no device value on the host (would_sync):
    on a GPU the host then builds the next micro-step's rows while the card computes."""
    from would_sync import WouldSync, watching_transfers

    cfg = replace(
        CFG,
        answer_probe_every=0,
        frame_rows=6,
        seq_batch=2,
        k_choices=(1, 2, 4, 8),
        downscale=downscale,
    )
    trainer = Trainer(cfg, tiny_llm, *data, tmp_path, frame, QA)
    models = (tiny_llm.model, trainer.tokenizer)
    weights = [t for m in models for t in (*m.parameters(), *m.buffers())]
    for objective in ("ar", "reconstruction", "span", "qa", "expand", "distill"):
        with WouldSync(weights) as watch:
            watching_transfers(monkeypatch, watch)
            losses, _ = trainer.micro_step(3, objective)
            losses.mean().backward()
        trainer.optimizer.zero_grad(set_to_none=True)
        assert not watch.events, (objective, dict(watch.events))


def test_encoding_chunks_of_several_lengths_matches_the_2d_mask(tok):
    """`encode` hands the encoder no mask (one length) or the 4D one (`causal_padding_mask`):
    the same bits as the 2D padding mask."""
    chunks = [torch.arange(3, 3 + n) for n in (16, 5, 11, 16)]
    ids = torch.zeros(4, 16, dtype=torch.long)
    mask = torch.zeros(4, 16, dtype=torch.long)
    for row, c in enumerate(chunks):
        ids[row, : len(c)], mask[row, : len(c)] = c, 1
    states = tok(ids, mask)
    for row, (c, got) in enumerate(zip(chunks, tok.encode(chunks, overhead=10**9), strict=True)):
        assert torch.equal(got, states[row, : len(c)])
    full = [c for c in chunks if len(c) == 16]
    for got in tok.encode(full, overhead=10**9):
        assert torch.equal(got, tok(full[0][None])[0])

"""`eval qa` on the tiny models: every condition answers every question; retrieval, positions,
scores and the report hold together; the CLI indexes a real QA set and reuses its index."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from extok_rag.cli.eval_cmd import eval_app
from extok_rag.config import RuntimeConfig
from extok_rag.evaluation import qa
from extok_rag.evaluation.books import EvalDataError
from extok_rag.evaluation.journal import Journal
from extok_rag.evaluation.qa import QAEvalConfig, conditions, evaluate_qa
from extok_rag.evaluation.qa_data import QAItem, QASet, load_qa_set, write_corpus
from extok_rag.evaluation.qa_report import qa_markdown
from extok_rag.indexing import IndexModels, IndexSettings, build_index, open_index
from extok_rag.models.embedder import Embedder

runner = CliRunner()
CFG = QAEvalConfig(
    questions=4,
    top_n=2,
    ks=(2, 4),
    hybrid_k=4,
    budget_ks=(2,),
    max_new_tokens=3,
    batch_size=3,
    latency_questions=2,
)
FACTS = {
    "alpha": "Alpha is a red planet with seven moons and a thin atmosphere of argon.",
    "beta": "Beta is a city of bridges, founded in 1204 by the river merchants of the north.",
    "gamma": "Gamma rays were measured by the observatory on the mountain for ten years.",
    "delta": "The delta of the river is home to herons, frogs and a famous rice harvest.",
    "epsilon": "Epsilon is the fifth letter, used by engineers for very small quantities.",
}


@pytest.fixture
def tiny_set() -> QASet:
    paragraphs = {f"{name}.txt": f"{name.title()}\n\n{text}" for name, text in FACTS.items()}
    items = (
        QAItem("q1", "How many moons does Alpha have?", ("seven",), ("alpha.txt",)),
        QAItem("q2", "When was Beta founded?", ("1204",), ("beta.txt",)),
        QAItem("q3", "What lives in the delta?", ("herons",), ("delta.txt",)),
        QAItem("q4", "What did the observatory measure?", ("gamma rays",), ("gamma.txt",)),
    )
    return QASet("tiny", items, paragraphs)


@pytest.fixture
def indexed(tiny_set, tiny_llm, tiny_embedder_dir, tmp_path):
    write_corpus(tiny_set, tmp_path / "corpus")
    models = IndexModels(tiny_llm, None, tiny_embedder_dir)
    build_index(tmp_path / "corpus", tmp_path / "index", models, IndexSettings(stride=2))
    embedder = Embedder.load(tiny_embedder_dir, RuntimeConfig(device="cpu", dtype="float32"))
    return open_index(tmp_path / "index"), embedder


def test_every_condition_answers_every_question(tiny_set, tiny_llm, indexed):
    snapshot, embedder = indexed
    result = evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, CFG)
    names = [c.name for c in conditions(CFG)]
    assert [r.condition.name for r in result.results] == names
    assert names == [
        "none",
        "raw top-2",
        "extok ×2 top-2",
        "extok ×4 top-2",
        "hybrid ×4 top-2",
        "extok ×2 top-4",
    ]
    for row in result.results:
        assert len(row.answers) == len(row.correct) == len(row.f1) == 4
        assert len(row.total_s) == len(row.prefill_s) == 2
        assert all(0 < p <= t for p, t in zip(row.prefill_s, row.total_s, strict=True))
        assert all(n <= CFG.max_new_tokens for n in row.answer_tokens)
    by = {r.condition.name: r for r in result.results}
    assert by["none"].recall == []
    # the same retrieved chunks, so the same recall, whatever form they take
    assert by["raw top-2"].recall == by["extok ×4 top-2"].recall == by["hybrid ×4 top-2"].recall
    assert all(
        a >= b for a, b in zip(by["extok ×2 top-4"].recall, by["raw top-2"].recall, strict=True)
    )
    for i in range(4):
        positions = [by[n].positions[i] for n in ("none", "extok ×4 top-2", "extok ×2 top-2")]
        assert positions == sorted(positions) and positions[0] < positions[1]
        assert by["extok ×2 top-2"].positions[i] < by["raw top-2"].positions[i]
        assert by["extok ×4 top-2"].k_used[i] == 4 and by["raw top-2"].k_used[i] is None


def test_timed_answers_equal_batched_ones(tiny_set, tiny_llm, indexed):
    """The first questions are answered one at a time (timed, as `ask` does), the rest in
    batches: the same greedy answers either way."""
    snapshot, embedder = indexed
    timed = evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, replace(CFG, latency_questions=4))
    batched = evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, replace(CFG, latency_questions=0))
    for a, b in zip(timed.results, batched.results, strict=True):
        assert a.answers == b.answers and len(a.total_s) == 4 and b.total_s == []


def test_expand_rows_and_their_controls_keep_to_each_questions_budget(tiny_set, tiny_llm, indexed):
    snapshot, embedder = indexed
    cfg = replace(CFG, ks=(4,), budget_ks=(), expand_budgets=(0.6,), latency_questions=1)
    result = evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, cfg)
    by = {r.condition.name: r for r in result.results}
    raw = by["raw top-2"]
    for mode in ("expand", "spans", "truncated"):
        row = by[f"{mode} 0.60·raw top-2"]
        assert len(row.answers) == 4 and len(row.total_s) == 1
        for used, full in zip(row.positions, raw.positions, strict=True):
            assert used <= round(0.6 * full)
    assert all(k is not None for k in by["expand 0.60·raw top-2"].k_used)
    assert by["expand 0.60·raw top-2"].recall == raw.recall
    markdown = qa_markdown([result])
    assert "expand 0.60·raw top-2: keeps" in markdown and "spans 0.60·raw top-2" in markdown


def test_budget_rows_in_two_frames_answer_the_same_questions(tiny_set, tiny_llm, indexed):
    """`--frames light,standard`: each budget row once per frame, the other frame's named so,
    on the same questions and budgets."""
    snapshot, embedder = indexed
    frames = ("light", "standard")
    cfg = replace(CFG, expand_budgets=(0.6,), frames=frames, latency_questions=0)
    result = evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, cfg, rows=("raw", "spans"))
    names = [r.condition.name for r in result.results]
    assert names == ["raw top-2", "spans 0.60·raw top-2", "spans 0.60·raw top-2 standard frame"]
    raw, light, old = result.results
    assert [c.frame for c in conditions(cfg) if c.mode == "spans"] == list(frames)
    assert len(light.answers) == len(old.answers) == 4
    for a, b, full in zip(light.positions, old.positions, raw.positions, strict=True):
        assert a <= round(0.6 * full) and b <= round(0.6 * full)


def test_scores_follow_the_answers(tiny_set, tiny_llm, indexed):
    snapshot, embedder = indexed
    result = evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, CFG)
    for row in result.results:
        for answer, correct, f1, item in zip(
            row.answers, row.correct, row.f1, tiny_set.items, strict=True
        ):
            assert correct == (item.answers[0] in answer.lower())
            assert 0.0 <= f1 <= 1.0 and (f1 == 1.0) <= correct


def test_markdown_has_a_row_per_condition_and_the_targets(tiny_set, tiny_llm, indexed):
    snapshot, embedder = indexed
    result = evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, CFG)
    text = qa_markdown([result])
    for cond in conditions(CFG):
        assert f"| {cond.name} |" in text
    assert "of raw accuracy (target ≥ 90%" in text
    assert "At about raw's position budget, extok ×2 top-4" not in text  # only k = 4 is checked
    assert "5 paragraphs" in text
    json.dumps(result.to_dict())


def test_a_subset_of_rows_answers_as_the_full_run_does(tiny_set, tiny_llm, indexed):
    snapshot, embedder = indexed
    full = evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, CFG)
    only = evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, CFG, rows=("compressed",))
    assert [r.condition.name for r in only.results] == ["extok ×2 top-2", "extok ×4 top-2"]
    by_name = {r.condition.name: r for r in full.results}
    for row in only.results:
        assert row.answers == by_name[row.condition.name].answers
    text = qa_markdown([only])  # no raw row: no ratios, no targets
    assert "| extok ×4 top-2 |" in text and "of raw accuracy" not in text


def test_untimed_rows_say_so_instead_of_a_speed_up(tiny_set, tiny_llm, indexed):
    snapshot, embedder = indexed
    untimed = replace(CFG, latency_questions=0)
    text = qa_markdown([evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, untimed)])
    assert "prefill not timed" in text and "0.00×" not in text


@pytest.fixture
def hotpot_available():
    try:
        load_qa_set("hotpotqa", 3)
    except EvalDataError as err:
        pytest.skip(f"QA data unavailable: {err}")


def test_cli_indexes_a_real_set_once_and_writes_docs(
    hotpot_available, tiny_llm_dir, tiny_embedder_dir, tmp_path, docs_sections
):
    args = ["qa", "--sets", "hotpotqa", "--questions", "3", "--top-n", "1", "--ks", "4"]
    args += ["--budget-ks", "2"]  # the tiny LLM's window holds one raw chunk
    args += ["--retrieval", "vector"]  # ... of those vectors pick: shorter than BM25's here
    args += ["--max-new-tokens", "2", "--latency-questions", "1", "--llm", str(tiny_llm_dir)]
    args += ["--embedder", str(tiny_embedder_dir), "--work-dir", str(tmp_path / "work")]
    args += ["--device", "cpu", "--dtype", "float32", "--out", str(tmp_path / "qa.json")]
    first = runner.invoke(eval_app, [*args, "--write-docs"])
    assert first.exit_code == 0, first.output
    assert "| extok ×4 top-1 |" in first.output and "| extok ×2 top-2 |" in first.output
    data = json.loads((tmp_path / "qa.json").read_text())
    assert data["sets"][0]["name"] == "hotpotqa" and len(data["sets"][0]["qids"]) == 3
    assert "extok-rag eval qa --sets hotpotqa --questions 3" in docs_sections["eval-qa"]
    work = tmp_path / "work" / "hotpotqa"
    manifest = (work / "index-int8" / "manifest.json").read_text()  # int8: index's default
    assert json.loads(manifest)["state_encoding"] == "int8"
    again = runner.invoke(eval_app, args)
    assert again.exit_code == 0, again.output
    assert "resuming 5 finished hotpotqa conditions" in " ".join(again.output.split())
    assert (work / "index-int8" / "manifest.json").read_text() == manifest
    f16 = runner.invoke(eval_app, [*args, "--states", "float16"])  # its own index and journal
    assert f16.exit_code == 0, f16.output
    assert "resuming" not in f16.output
    f16_manifest = json.loads((work / "index" / "manifest.json").read_text())
    assert f16_manifest.get("state_encoding", "float16") == "float16"
    assert (work / "index-int8" / "manifest.json").read_text() == manifest


def test_cli_rejects_an_unknown_set():
    result = runner.invoke(eval_app, ["qa", "--sets", "trivia"])
    assert result.exit_code != 0 and "--sets" in result.output


class Stop(Exception):
    """Stands for Ctrl-C / kill part-way through a run."""


def test_eval_qa_resumes_finished_conditions(tiny_set, tiny_llm, indexed, tmp_path, monkeypatch):
    snapshot, embedder = indexed
    whole = evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, CFG)
    journal = Journal.open("qa", {"run": 1}, root=tmp_path)
    real = qa.run_condition
    finished = []

    def stops_after_two(*args):
        if len(finished) == 2:
            raise Stop
        finished.append(real(*args))
        return finished[-1]

    monkeypatch.setattr(qa, "run_condition", stops_after_two)
    with pytest.raises(Stop):
        evaluate_qa(tiny_llm, embedder, snapshot, tiny_set, CFG, journal=journal)
    ran = []
    monkeypatch.setattr(qa, "run_condition", lambda *a: ran.append(a[6].name) or real(*a))
    resumed = evaluate_qa(
        tiny_llm,
        embedder,
        snapshot,
        tiny_set,
        CFG,
        journal=Journal.open("qa", {"run": 1}, root=tmp_path),
    )
    names = [r.condition.name for r in whole.results]
    assert ran == names[2:]  # the two finished conditions were read back, not run
    for a, b in zip(whole.results, resumed.results, strict=True):
        assert a.condition == b.condition
        assert (a.answers, a.correct, a.f1, a.positions, a.recall, a.k_used) == (
            b.answers,
            b.correct,
            b.f1,
            b.positions,
            b.recall,
            b.k_used,
        )

"""RAG question answering with gold answers: retrieval + the frozen LLM, raw vs compressed.

For one QA set (`qa_data`), over an index of the set's paragraph corpus built by the indexer:

    none                no retrieval: the question alone
    raw                 the top-n retrieved chunks as raw text
    extok×k             the same top-n chunks as stored extensible embeddings down-scaled by k
    hybrid×k            the best chunk raw, the other n-1 compressed by k
    extok×k top-(k·n)   k·n chunks compressed by k: about raw top-n's position budget

Every condition answers the same questions with greedy decoding and the same prompt frame
(`models.ask_frame`). Scores: the official SQuAD normalisation, "accuracy" = a normalised gold
answer appears in the output, token F1; retrieval recall@n = the share of a question's gold
paragraphs among the retrieved chunks' documents. The first `latency_questions` questions are
answered one at a time, as `ask` answers them, and timed: prefill = the prompt's forward pass
up to the first token, total = retrieval + prompt building + the whole answer; the rest run
in batches (one prompt per row, each prefilled alone: the same greedy answers as one at a
time, bit for bit in bf16, `models.generation.decode_steps`).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, fields

from extok_rag.ask.build import build_prompt
from extok_rag.ask.prompt import Prompt
from extok_rag.ask.retrieval import Retrieved, retrieve
from extok_rag.config import GenerationConfig
from extok_rag.evaluation.journal import Journal
from extok_rag.evaluation.qa_conditions import (
    ROW_FAMILIES,
    Condition,
    QAEvalConfig,
    conditions,
    family,
)
from extok_rag.evaluation.qa_data import QASet, answer_contained, token_f1
from extok_rag.indexes import IndexSnapshot
from extok_rag.models.embedder import Embedder
from extok_rag.models.generation import generate_batch, generate_ids
from extok_rag.models.llm import FrozenLLM


@dataclass
class ConditionResult:
    condition: Condition
    answers: list[str] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)  # empty for "none"
    prefill_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    answer_tokens: list[int] = field(default_factory=list)  # generated tokens per answer
    k_used: list[int | None] = field(default_factory=list)

    def summary(self) -> dict:
        def median(xs):
            return statistics.median(xs) if xs else None

        return {
            "name": self.condition.name,
            "questions": len(self.correct),
            "accuracy": sum(self.correct) / max(1, len(self.correct)),
            "f1": sum(self.f1) / max(1, len(self.f1)),
            "recall": sum(self.recall) / len(self.recall) if self.recall else None,
            "positions_median": median(self.positions),
            "prefill_ms_median": 1000 * median(self.prefill_s) if self.prefill_s else None,
            "total_ms_median": 1000 * median(self.total_s) if self.total_s else None,
            "answer_tokens_mean": sum(self.answer_tokens) / max(1, len(self.answer_tokens)),
            "timed_questions": len(self.total_s),
        }

    def lists(self) -> dict:
        """Every per-question list (a journal record)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "condition"}


@dataclass
class SetResult:
    name: str
    corpus_paragraphs: int
    index_chunks: int
    results: list[ConditionResult]
    qids: list[str]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "corpus_paragraphs": self.corpus_paragraphs,
            "index_chunks": self.index_chunks,
            "summary": [r.summary() for r in self.results],
            "per_question": {
                r.condition.name: {
                    "answers": r.answers,
                    "correct": r.correct,
                    "f1": r.f1,
                    "positions": r.positions,
                }
                for r in self.results
            },
            "qids": self.qids,
        }


Progress = Callable[[str, int, int], None]  # (condition name, done, total)


def evaluate_qa(
    llm: FrozenLLM,
    embedder: Embedder,
    snapshot: IndexSnapshot,
    qa: QASet,
    cfg: QAEvalConfig,
    progress: Progress | None = None,
    journal: Journal | None = None,
    rows: Collection[str] = ROW_FAMILIES,
) -> SetResult:
    """Every condition of the `rows` families on every question of `qa` (the index holds
    `qa.paragraphs`). With a journal, each finished condition is recorded, and one recorded
    before is read back."""
    items = qa.items[: cfg.questions]
    conds = [c for c in conditions(cfg) if family(c, cfg) in rows]
    depth = max(c.top_n for c in conds)
    hits = [
        retrieve(snapshot, embedder, item.question, depth, cfg.retrieval, llm) for item in items
    ]
    raw = Condition("raw", "raw", cfg.top_n)
    raw_positions = (
        [
            build_one(llm, embedder, i.question, h, raw, cfg, snapshot).positions
            for i, h in zip(items, hits, strict=True)
        ]
        if cfg.expand_budgets
        else [0] * len(items)
    )
    results = []
    for cond in conds:
        key = f"{qa.name}/{cond.name}"
        if journal is not None and key in journal.done:
            results.append(ConditionResult(cond, **journal.done[key]))
            continue
        budgets = [round(cond.share * p) if cond.share else None for p in raw_positions]
        result = run_condition(llm, embedder, snapshot, items, hits, budgets, cond, cfg, progress)
        if journal is not None:
            journal.record(key, result.lists())
        results.append(result)
    return SetResult(
        qa.name,
        len(qa.paragraphs),
        snapshot.manifest.counts.chunks,
        results,
        [item.qid for item in items],
    )


def run_condition(
    llm, embedder, snapshot, items, hits, budgets, cond, cfg, progress
) -> ConditionResult:
    """Answer and score every question under `cond`: the first `latency_questions` one at a
    time and timed, as `ask` answers them; the rest in batches."""
    result = ConditionResult(cond)
    prompts = [
        build_one(llm, embedder, item.question, chunks, cond, cfg, snapshot, budget)
        for item, chunks, budget in zip(items, hits, budgets, strict=True)
    ]
    timed = min(cfg.latency_questions, len(items))
    answers = time_questions(result, llm, embedder, snapshot, items[:timed], budgets, cfg)
    answers += answer_all(llm, [p.row for p in prompts[timed:]], cfg, cond.name, progress)
    for item, chunks, prompt, tokens in zip(items, hits, prompts, answers, strict=True):
        answer = llm.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        score(result, item, chunks[: cond.top_n], prompt, answer)
        result.answer_tokens.append(len(tokens))
    return result


def build_one(
    llm: FrozenLLM,
    embedder: Embedder,
    question: str,
    chunks: Sequence[Retrieved],
    cond: Condition,
    cfg: QAEvalConfig,
    snapshot: IndexSnapshot,
    budget: int | None = None,
) -> Prompt:
    used = list(chunks[: cond.top_n])
    stride = snapshot.manifest.stride
    ask = cond.ask_config(budget)
    return build_prompt(llm, question, used, ask, stride, cfg.max_new_tokens, embedder)


def answer_all(
    llm: FrozenLLM, rows: list, cfg: QAEvalConfig, name: str, progress: Progress | None
) -> list[list[int]]:
    """Greedy answer tokens for all prompts, in batches of similar length (less padding)."""
    order = sorted(range(len(rows)), key=lambda i: sum(len(s) for s in rows[i]))
    answers: list[list[int]] = [[] for _ in rows]
    for start in range(0, len(order), cfg.batch_size):
        batch = order[start : start + cfg.batch_size]
        ids = generate_batch(llm, [rows[i] for i in batch], cfg.max_new_tokens, cfg.repeat_stop)
        for i, tokens in zip(batch, ids, strict=True):
            answers[i] = tokens
        if progress is not None:
            progress(name, min(start + cfg.batch_size, len(rows)), len(rows))
    return answers


def score(result: ConditionResult, item, chunks, prompt: Prompt, answer: str) -> None:
    result.answers.append(answer)
    result.correct.append(answer_contained(answer, item.answers))
    result.f1.append(token_f1(answer, item.answers))
    result.positions.append(prompt.positions)
    result.k_used.append(prompt.k)
    if result.condition.mode != "none":
        found = {c.doc_path for c in chunks}
        result.recall.append(sum(d in found for d in item.gold_docs) / len(item.gold_docs))


def time_questions(
    result: ConditionResult,
    llm: FrozenLLM,
    embedder: Embedder,
    snapshot: IndexSnapshot,
    items: Sequence,
    budgets: Sequence[int | None],
    cfg: QAEvalConfig,
) -> list[list[int]]:
    """Answer one question at a time, as `extok-rag ask` does, timing retrieval + prompt +
    answer (total) and the prompt's forward pass to the first token (prefill); the answers'
    token ids."""
    cond = result.condition
    gen = GenerationConfig(cfg.max_new_tokens, temperature=0.0, repeat_stop=cfg.repeat_stop)
    answers = []
    for item, budget in zip(items, budgets, strict=False):
        start = time.perf_counter()
        chunks = (
            retrieve(snapshot, embedder, item.question, cond.top_n, cfg.retrieval, llm)
            if cond.top_n
            else []
        )
        prompt = build_one(llm, embedder, item.question, chunks, cond, cfg, snapshot, budget)
        generating = time.perf_counter()
        tokens = generate_ids(llm, prompt.row, gen)
        answer = list(itertools.islice(tokens, 1))  # the prompt's forward pass, first token
        result.prefill_s.append(time.perf_counter() - generating)
        answer += tokens
        result.total_s.append(time.perf_counter() - start)
        answers.append(answer)
    return answers

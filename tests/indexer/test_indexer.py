"""The indexer on tiny models: bad files skipped, incremental re-runs, consistency, refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest

from extok_rag.chunking import ChunkingConfig
from extok_rag.errors import IncompatibleModelError
from extok_rag.indexes import ChunkTable, read_manifest
from extok_rag.indexing import build_index, open_index

GOOD = {"a.md", "sub/b.txt", "c.rst", "page.html", "big.md"}
BAD = {"empty.txt", "blank.md", "binary.txt", "latin1.txt", "broken.pdf"}


def rows(index_dir):
    """{chunk_id: (doc_hash, text, n_tokens, states, vector)} of the committed snapshot."""
    snap = open_index(index_dir)
    stored = snap.table.fetch(snap.table.vectors()[0])
    assert len({c.chunk_id for c in stored}) == len(stored), "duplicate chunks"
    return {c.chunk_id: c for c in stored}


def test_build_skips_bad_files_with_one_warning_each(corpus, tmp_path, models, settings):
    warnings = []

    class Collect:
        def warn(self, m):
            warnings.append(m)

        def status(self, m): ...
        def start(self, plan): ...
        def advance(self, *a): ...

    report = build_index(corpus, tmp_path / "idx", models, settings, progress=Collect())
    assert sorted(w.split()[1].rstrip(":") for w in warnings) == sorted(BAD)
    snap = open_index(tmp_path / "idx")
    stored = rows(tmp_path / "idx")
    assert {c.doc_path for c in stored.values()} == GOOD
    assert report.counts.chunks == len(stored) == len(snap.vectors) == snap.table.count()
    assert report.counts.documents == len(GOOD)
    for chunk in stored.values():
        assert 0 < chunk.n_tokens <= 64
        assert chunk.states.shape == (-(-chunk.n_tokens // 2), 64)
        assert chunk.states.dtype == np.float16
        assert np.isclose(np.linalg.norm(chunk.vector), 1.0, atol=1e-4)
    html = " ".join(c.text for c in stored.values() if c.doc_path == "page.html")
    assert "Visible & indexed text." in html and "var x" not in html
    big = sorted((c for c in stored.values() if c.doc_path == "big.md"), key=lambda c: c.position)
    assert len(big) > 20 and [c.position for c in big] == list(range(len(big)))
    manifest = read_manifest(tmp_path / "idx")
    assert manifest.stride == 2 and manifest.chunking == settings.chunking.to_dict()
    assert manifest.tokenizer.fingerprint.startswith(f"untrained:{models.llm.identity.fingerprint}")
    assert manifest.table_version == snap.table.version


def test_unchanged_rerun_makes_zero_model_calls(corpus, tmp_path, make_models, settings):
    first = make_models()
    build_index(corpus, tmp_path / "idx", first, settings)
    assert first.calls["tokenizer"] > 0 and first.calls["embedder"] > 0
    version = read_manifest(tmp_path / "idx").table_version
    again = make_models()
    report = build_index(corpus, tmp_path / "idx", again, settings)
    assert report.up_to_date
    assert again.calls == {"tokenizer": 0, "embedder": 0}
    assert "tokenizer" not in again.__dict__ and "embedder" not in again.__dict__  # not loaded
    assert read_manifest(tmp_path / "idx").table_version == version


def test_changed_and_deleted_files_replace_their_chunks(corpus, tmp_path, models, settings):
    build_index(corpus, tmp_path / "idx", models, settings)
    before = rows(tmp_path / "idx")
    (corpus / "a.md").write_text("# Alpha, rewritten\n\nOnly this sentence now.\n")
    (corpus / "sub" / "b.txt").unlink()
    (corpus / "new.md").write_text("A new document about compression.\n")
    report = build_index(corpus, tmp_path / "idx", models, settings)
    assert [f.rel for f in report.plan.changed] == ["a.md"]
    assert [f.rel for f in report.plan.added] == ["new.md"] or "new.md" in [
        f.rel for f in report.plan.added
    ]
    assert report.plan.deleted == ["sub/b.txt"]
    after = rows(tmp_path / "idx")
    assert {c.doc_path for c in after.values()} == GOOD - {"sub/b.txt"} | {"new.md"}
    (alpha,) = [c for c in after.values() if c.doc_path == "a.md"]
    assert "rewritten" in alpha.text
    kept = {k for k, c in before.items() if c.doc_path in {"big.md", "c.rst", "page.html"}}
    assert kept <= set(after)  # untouched documents keep their chunks (and ids)


def test_stored_states_round_trip_bitwise(corpus, tmp_path, models, settings, monkeypatch):
    written = {}
    add = ChunkTable.add

    def capture(self, records):
        written.update({r.chunk_id: r for r in records})
        return add(self, records)

    monkeypatch.setattr(ChunkTable, "add", capture)
    build_index(corpus, tmp_path / "idx", models, settings)
    stored = rows(tmp_path / "idx")
    assert stored.keys() == written.keys()
    for key, record in written.items():
        got = stored[key]
        assert got.states.shape == record.states.shape and got.states.dtype == np.float16
        assert got.states.tobytes() == record.states.tobytes()
        assert got.vector.tobytes() == record.vector.astype(np.float32).tobytes()


def test_states_are_the_tokenizer_output_downscaled(corpus, tmp_path, models, settings):
    import torch

    from extok_rag.chunking import Chunker
    from extok_rag.indexing.reading import list_corpus, read_text
    from extok_rag.models.extensible_tokenizer import downscale

    build_index(corpus, tmp_path / "idx", models, settings)
    stored = rows(tmp_path / "idx")
    (file,) = [f for f in list_corpus(corpus)[0] if f.rel == "c.rst"]
    (chunk,) = Chunker(models.llm.tokenizer, settings.chunking).split(file.rel, read_text(file))
    with torch.inference_mode():
        (states,) = models.tokenizer.encode([torch.from_numpy(chunk.token_ids)])
    expected = downscale(states, 2).to(torch.float16).numpy()
    assert stored[chunk.chunk_id].states.tobytes() == expected.tobytes()


def test_index_built_with_other_models_is_refused_then_rebuilt(
    corpus, tmp_path, models, other_llm_dir, tiny_embedder_dir, settings
):
    from extok_rag.config import RuntimeConfig
    from extok_rag.indexing import IndexModels
    from extok_rag.models.llm import FrozenLLM

    build_index(corpus, tmp_path / "idx", models, settings)
    other = FrozenLLM.load(other_llm_dir, RuntimeConfig(device="cpu", dtype="float32"))
    other_models = IndexModels(other, None, tiny_embedder_dir)
    with pytest.raises(IncompatibleModelError, match="--rebuild"):
        build_index(corpus, tmp_path / "idx", other_models, settings)
    old = open_index(tmp_path / "idx")  # a reader pinned to the old snapshot
    build_index(corpus, tmp_path / "idx", other_models, settings, rebuild=True)
    assert read_manifest(tmp_path / "idx").llm.fingerprint == other.identity.fingerprint
    assert old.table.count() == old.manifest.counts.chunks  # still readable after the rebuild


def test_other_chunking_is_refused(corpus, tmp_path, models, settings):
    build_index(corpus, tmp_path / "idx", models, settings)
    other = replace(settings, chunking=ChunkingConfig(chunk_tokens=96))
    with pytest.raises(IncompatibleModelError, match="chunking"):
        build_index(corpus, tmp_path / "idx", models, other)
    # unspecified settings default to the index's own
    report = build_index(
        corpus, tmp_path / "idx", models, replace(settings, chunking=None, stride=None)
    )
    assert report.up_to_date


def test_dry_run_writes_nothing(corpus, tmp_path, models, settings):
    report = build_index(corpus, tmp_path / "idx", models, settings, dry_run=True)
    assert not (tmp_path / "idx").exists()
    assert len(report.plan.added) == len(GOOD | BAD) and report.chunks_written > 20
    assert models.calls == {"tokenizer": 0, "embedder": 0}


def test_include_and_exclude_globs(corpus, tmp_path, models, settings):
    globs = replace(settings, include=("*.md", "sub/*"), exclude=("big.md",))
    build_index(corpus, tmp_path / "idx", models, globs)
    assert {c.doc_path for c in rows(tmp_path / "idx").values()} == {"a.md", "sub/b.txt"}


class Crash(BaseException):
    """Stands in for a kill at one point of a run (BaseException: nothing may catch it)."""


@pytest.mark.parametrize("where", ["add", "delete", "save", "manifest"])
def test_crash_at_any_step_keeps_old_snapshot_and_next_run_completes(
    corpus, tmp_path, models, monkeypatch, where, settings
):
    from extok_rag.indexes import VectorIndex
    from extok_rag.indexing import commit

    idx = tmp_path / "idx"
    settings = replace(settings, exclude=("big.md",))  # small corpus: three builds per case
    build_index(corpus, idx, models, settings)
    before = rows(idx)
    (corpus / "a.md").write_text("Alpha changed.\n\n" + "More words here. " * 40)
    (corpus / "c.rst").unlink()
    for i in range(3):
        (corpus / f"more{i}.md").write_text(f"Document {i}. " * 60)

    targets = {
        "add": (ChunkTable, "add", 2),  # the second commit of new chunks
        "delete": (ChunkTable, "delete_docs", 1),
        "save": (VectorIndex, "save", 1),
        "manifest": (commit, "write_manifest", 1),
    }
    owner, name, nth = targets[where]
    original = getattr(owner, name)
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise Crash
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, crashing)
    with pytest.raises(Crash):
        build_index(corpus, idx, models, settings)
    monkeypatch.setattr(owner, name, original)

    assert rows(idx).keys() == before.keys()  # readers still see the previous index
    build_index(corpus, idx, models, settings)
    resumed = rows(idx)
    clean = tmp_path / "clean"
    build_index(corpus, clean, models, settings)
    assert_same_rows(resumed, rows(clean))


def assert_same_rows(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, x in a.items():
        y = b[key]
        assert (x.doc_hash, x.text, x.n_tokens) == (y.doc_hash, y.text, y.n_tokens)
        np.testing.assert_allclose(x.states.astype(np.float32), y.states, atol=2e-3, rtol=1e-2)
        np.testing.assert_allclose(x.vector, y.vector, atol=1e-4)


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from extok_rag.config import RuntimeConfig
    from extok_rag.indexes import ChunkTable
    from extok_rag.indexing import IndexModels, IndexSettings, build_index
    from extok_rag.chunking import ChunkingConfig
    from extok_rag.models.llm import FrozenLLM

    llm_dir, emb_dir, corpus, index = map(Path, sys.argv[1:5])
    add = ChunkTable.add
    calls = []

    def add_then_die(self, records):
        row_ids = add(self, records)
        calls.append(1)
        if len(calls) == 2:  # after the second whole-document commit
            os.kill(os.getpid(), signal.SIGKILL)
        return row_ids

    ChunkTable.add = add_then_die
    llm = FrozenLLM.load(llm_dir, RuntimeConfig(device="cpu", dtype="float32"))
    settings = IndexSettings(
        chunking=ChunkingConfig(chunk_tokens=64), stride=2, batch_tokens=2048,
        commit_tokens=512, exclude=("big.md",),
    )
    build_index(corpus, index, IndexModels(llm, None, emb_dir), settings)
    """
)


def test_sigkill_mid_run_then_rerun_equals_clean_build(
    corpus, tmp_path, tiny_llm_dir, tiny_embedder_dir, models, settings
):
    """A real `kill -9` after the second table commit of a first build."""
    settings = replace(settings, exclude=("big.md",))
    idx = tmp_path / "idx"
    args = [str(tiny_llm_dir), str(tiny_embedder_dir), str(corpus), str(idx)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert not (idx / "manifest.json").exists()  # nothing committed: no index for readers yet
    assert ChunkTable.open(idx).count() > 0  # but the finished documents are kept
    build_index(corpus, idx, models, settings)
    assert not (idx / "pending.json").exists()
    build_index(corpus, tmp_path / "clean", models, settings)
    assert_same_rows(rows(idx), rows(tmp_path / "clean"))


def test_a_corpus_inside_a_hidden_folder_is_read_but_hidden_files_in_it_are_not(tmp_path):
    from extok_rag.indexing.reading import list_corpus

    root = tmp_path / ".cache" / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("visible text")
    (root / ".hidden.txt").write_text("a dotfile")
    (root / ".git").mkdir()
    (root / ".git" / "b.txt").write_text("inside a dot folder")
    files, warnings = list_corpus(root)
    assert [f.rel for f in files] == ["sub/a.txt"] and warnings == []

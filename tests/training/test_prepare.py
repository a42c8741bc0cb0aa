"""`prepare_training_data` and `extok-rag data prepare` on the small set: shards, meta,
idempotence, the CLI."""

from __future__ import annotations

import numpy as np
import typer
from typer.testing import CliRunner

from extok_rag.training import DataSettings, PackedSequences, prepare_training_data
from extok_rag.training.data import training_data_dir
from extok_rag.training.shards import file_sha256


def test_small_prepare_writes_consistent_shards(small_prepared):
    data_dir, meta, tokenizer = small_prepared
    out = training_data_dir(data_dir)
    seq_len = meta["settings"]["seq_len"]
    for split in ("train", "val"):
        seqs = PackedSequences(out / meta[split]["file"], seq_len)
        assert len(seqs) == meta[split]["sequences"]
        assert file_sha256(out / meta[split]["file"]) == meta[split]["sha256"]
    train = PackedSequences(out / "train.bin", seq_len)
    assert len(train) > 10 and meta["val"]["documents"] >= 1
    assert int(np.max(train[0])) < len(tokenizer)
    assert (np.asarray(train._data) == meta["separator_id"]).any()
    names = [s["name"] for s in meta["sources"]]
    assert names == ["debian-reference", "jargon"]
    for s in meta["sources"]:
        assert s["version"] and s["licenses"] and s["chars"] > 100_000 and s["tokens"] > 0
    text = tokenizer.decode(train[3].tolist())
    assert "  " not in text.replace("\n\n", " ")  # whitespace normalised inside paragraphs


def test_rerun_with_same_settings_is_reused(small_prepared):
    data_dir, meta, tokenizer = small_prepared
    settings = DataSettings(sources=("debian-reference", "jargon"), seq_len=256, val_fraction=0.05)
    again = prepare_training_data(settings, data_dir, tokenizer, tokenizer_name="tiny-bytes")
    assert again["reused"] and again["train"]["sha256"] == meta["train"]["sha256"]


def test_cli_prepare_reports_a_summary(small_prepared, monkeypatch):
    from extok_rag.cli.data_cmd import data_app
    from extok_rag.training import data

    data_dir, _, tokenizer = small_prepared
    monkeypatch.setattr(data, "load_default_tokenizer", lambda: tokenizer)
    monkeypatch.setenv("COLUMNS", "200")
    app = typer.Typer()
    app.add_typer(data_app)
    args = ["data", "prepare", "--data-dir", str(data_dir), "--sources", "jargon"]
    args += ["--seq-len", "128", "--max-chars", "300000"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "jargon" in result.output and "train.bin" in result.output
    rerun = CliRunner().invoke(app, args)
    assert rerun.exit_code == 0 and "reused" in rerun.output


def test_cli_rejects_unknown_sources(tmp_path):
    from extok_rag.cli.data_cmd import data_app

    app = typer.Typer()
    app.add_typer(data_app)
    args = ["data", "prepare", "--data-dir", str(tmp_path), "--sources", "shakespeare"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "unknown source" in result.output


# -- passages, SWORD documents, QA files (no packages needed) --------------------------------
def test_passages_join_short_and_cut_long():
    from extok_rag.training.data import passages

    short = ["A short one." * 8, "Another short paragraph." * 4, "Third."]
    sentences = [f"Sentence number {i} of a long paragraph." for i in range(80)]
    long = " ".join(sentences)
    out = passages([*short, long, "tail that is too short."])
    assert all(200 <= len(p) <= 1500 for p in out)
    assert out[0] == "\n\n".join(short[:3])  # joined until 200 characters
    assert all(p.endswith("paragraph.") for p in out[1:])  # cut at sentence ends
    assert " ".join(out[1:]) == long  # nothing of the long paragraph lost
    assert passages(["x" * 1600]) == []  # one sentence too long to cut


def test_sword_documents_leave_out_the_psalms(tmp_path, sword_module):
    from extok_rag.training.documents import _sword_documents
    from extok_rag.training.sources import source_by_name

    slots = ["", "", '<div osisID="Gen" sID="g" type="book"/>']
    slots += ['<chapter osisID="Gen.1" sID="Gen.1"/>', "In the beginning."]
    slots += ['<div osisID="Ps" sID="p" type="book"/>', "Intro to the Psalms."]
    slots += ['<chapter osisID="Ps.1" sID="Ps.1"/>', "Blessed is the man."]
    conf = sword_module(tmp_path, "Tiny", {"ot": slots})
    source = source_by_name(["bible-kjv"])[0]
    docs = dict(_sword_documents(source, [conf], seed=0))
    assert docs == {"bible-kjv:Tiny:Gen.1": ["In the beginning."]}


def test_qa_files_keep_validation_paragraphs_out(tmp_path):
    from extok_rag.datasets.qa_splits import ExcludedParagraphs, HotpotSplits
    from extok_rag.datasets.training_files import QAExample, read_answer_probe, read_qa_train
    from extok_rag.training.data import write_qa_files

    train = (
        QAExample("a", "A?", "1", ("G1\n\ng1", "G2\n\ng2"), ("D1\n\nd1", "D2\n\nd2")),
        QAExample("b", "B?", "2", ("G3\n\ng3", "D2\n\nd2"), ()),
    )
    probe = (QAExample("p", "P?", "3", ("P1\n\np1",)),)
    splits = HotpotSplits(frozenset({"e"}), probe, train, ExcludedParagraphs(), 0, 0)
    out = tmp_path / "training-data"
    out.mkdir()
    meta = write_qa_files(splits, {"D2\n\nd2"}, out)
    assert [e.qid for e in read_qa_train(tmp_path)] == ["a"]
    assert read_qa_train(tmp_path)[0].distractors == ("D1\n\nd1",)
    assert read_answer_probe(tmp_path) == list(probe)
    assert (
        meta["qa_train"]["questions"] == 1 and meta["hotpotqa_split"]["val_questions_dropped"] == 1
    )
    assert write_qa_files(None, set(), out)["qa_train"] is None
    assert not (out / "qa_train.jsonl").exists()

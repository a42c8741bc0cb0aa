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

"""`extok-rag index` and `info` through the real typer commands, on a local app."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from extok_rag.cli.index_cmd import index, info


def test_index_dry_run_index_rerun_and_info(corpus, tmp_path, tiny_llm_dir, tiny_embedder_dir):
    app = typer.Typer()
    app.command()(index)
    app.command()(info)
    runner = CliRunner()
    idx = tmp_path / "idx"
    common = [str(corpus), "--index", str(idx), "--llm", str(tiny_llm_dir)]
    common += ["--embedder", str(tiny_embedder_dir), "--chunk-tokens", "64", "--device", "cpu"]
    common += ["--exclude", "big.md"]
    dry = runner.invoke(app, ["index", *common, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert not idx.exists()
    built = runner.invoke(app, ["index", *common])
    assert built.exit_code == 0, built.output
    assert "skipped binary.txt: binary file" in built.output
    assert "no trained checkpoint for this LLM" in built.output
    again = runner.invoke(app, ["index", *common])
    assert again.exit_code == 0 and "up to date" in again.output
    shown = runner.invoke(app, ["info", str(idx)])
    assert shown.exit_code == 0, shown.output
    assert "stride" in shown.output and "chunk_tokens=64" in shown.output
    missing = runner.invoke(app, ["info", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "no index manifest" in missing.output

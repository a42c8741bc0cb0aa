"""`extok-rag eval lm` end to end on the tiny model, through typer's CliRunner."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from extok_rag.cli.eval_cmd import eval_app
from extok_rag.config import TokenizerConfig
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer

runner = CliRunner()
SMALL = ["--lengths", "128,256", "--windows", "2", "--ks", "1,4", "--chunk-len", "32"]
SMALL += ["--target-len", "32", "--raw-positions", "96", "--device", "cpu", "--dtype", "float32"]


def test_eval_lm_end_to_end(tiny_llm, tiny_llm_dir, tmp_path, book_dir, docs_sections, monkeypatch):
    monkeypatch.setenv("EXTOK_RAG_HOME", str(tmp_path / "home"))  # where the journal goes
    checkpoint = tmp_path / "zero-layer"
    tok = ExtensibleTokenizer.from_llm(tiny_llm, TokenizerConfig(num_layers=0))
    tok.save_pretrained(checkpoint)
    out = tmp_path / "result.json"
    args = ["lm", "--llm", str(tiny_llm_dir), "--books", str(book_dir)]
    args += ["--tokenizer", str(checkpoint), "--out", str(out), "--write-docs", *SMALL]
    result = runner.invoke(eval_app, args)
    assert result.exit_code == 0, result.output
    assert "(a) no context" in result.output and "(d) extensible ×4" in result.output
    data = json.loads(out.read_text())
    assert data["config"]["chunk_len"] == 32 and len(data["windows"]) == 2
    cells = data["results"]["256"]
    assert cells["extok@1"]["window_nll"] == cells["raw-full"]["window_nll"]
    assert cells["untrained@4"]["ppl"] > 0
    body = docs_sections["eval-lm"]
    assert "extok-rag eval lm --tokenizer" in body and "--ks 1,4" in body
    assert "Median of per-window perplexities" in body
    again = runner.invoke(eval_app, [a for a in args if a != "--write-docs"])
    assert again.exit_code == 0, again.output
    assert "resuming 4 finished windows" in again.output  # 2 windows x 2 lengths, none rerun
    assert json.loads(out.read_text())["results"] == data["results"]


def test_eval_lm_without_checkpoint_marks_d_na(tiny_llm_dir, book_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EXTOK_RAG_HOME", str(tmp_path / "home"))
    args = ["lm", "--llm", str(tiny_llm_dir), "--books", str(book_dir), *SMALL]
    result = runner.invoke(eval_app, args)
    assert result.exit_code == 0, result.output
    assert "no trained checkpoint for this LLM" in result.output


def test_eval_lm_errors_are_one_line(tiny_llm_dir, tmp_path):
    args = ["lm", "--llm", str(tiny_llm_dir), "--books", str(tmp_path / "none"), *SMALL]
    result = runner.invoke(eval_app, args)
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(eval_app, ["lm", "--lengths", "a,b"])
    assert result.exit_code == 2


def test_eval_is_a_group_when_mounted():
    app = typer.Typer()
    app.add_typer(eval_app, name="eval")
    result = runner.invoke(app, ["eval", "--help"])
    assert result.exit_code == 0 and "lm" in result.output

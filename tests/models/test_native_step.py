"""The decoding step in C++ (`models.native`, `native_step.cpp`): the same logits as
`LlamaStep`'s Python loop, bit for bit (float32, bf16 with oneDNN-packed weights, the 4-bit
weights), rows of several widths in one batch; built once into the cache, loaded from it by
later processes, and left aside (the Python step decodes) where it cannot be built or loaded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import tiny_llama

from extok_rag.models import native, q4
from extok_rag.models.decode_step import LlamaStep
from extok_rag.models.static_kv import StaticKV


def _child(home, code: str, **env) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "EXTOK_RAG_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A fresh home with the module built by a child process (one compile, ~20 s), and the
    module loaded in this test process (from there, unless an earlier test loaded the cache
    of the home it ran with: the same source). Later `LlamaStep`s here use it: the same bits."""
    home = tmp_path_factory.mktemp("native-home")
    code = (
        "from extok_rag.models import native; "
        "print(native.load(build=True) is not None, native.failure())"
    )
    out = _child(home, code)
    if not out.startswith("True"):
        pytest.skip(f"the native step cannot be built here: {out}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXTOK_RAG_HOME", str(home))
        assert native.library_path().is_file()
        assert native.load() is not None
    return home


def _rows(cfg, dtype, lengths):
    """Random prefill caches of rows of these lengths, one per row (`StaticKV.from_rows`)."""
    D = cfg.hidden_size // cfg.num_attention_heads
    return [
        [
            tuple(torch.randn(1, cfg.num_key_value_heads, n, D).to(dtype) for _ in range(2))
            for _ in range(cfg.num_hidden_layers)
        ]
        for n in lengths
    ]


def _decode(step, kv, tokens, steps: int):
    """Greedy steps from `tokens` (B,): every step's logits (steps, B, V)."""
    positions, seen = kv.lengths.clone(), []
    with torch.inference_mode():
        for n in range(steps):
            logits = step(kv, tokens, positions + n)
            seen.append(logits)
            tokens = logits.argmax(-1)
    return torch.stack(seen)


def _same_as_python(model, weights=None):
    """Rows of three widths (192, 128, 64: three attention runs), longest first as the callers
    keep them: the native step's logits and cache are the Python step's bits, and a row's
    logits alone are its bits in the batch (bf16; float32 up to MKL's float noise)."""
    torch.manual_seed(0)
    rows = _rows(model.config, next(model.parameters()).dtype, [130, 100, 70, 61, 5])
    python = LlamaStep(model, weights, native=False)
    fast = LlamaStep(model, weights)
    assert fast.native_step() is not None and python.native_step() is None
    tokens = torch.tensor([3, 4, 5, 6, 7])
    kv, kv_python = StaticKV.from_rows(rows, 16), StaticKV.from_rows(rows, 16)
    ours, theirs = _decode(fast, kv, tokens, 12), _decode(python, kv_python, tokens, 12)
    assert torch.equal(ours, theirs)
    assert torch.equal(kv.keys, kv_python.keys) and torch.equal(kv.values, kv_python.values)
    assert torch.equal(kv.lengths, kv_python.lengths)
    alone = _decode(fast, StaticKV.from_rows(rows[2:3], 16), tokens[2:3], 12)
    if ours.dtype == torch.bfloat16:
        assert torch.equal(alone[:, 0], ours[:, 2])
    else:  # float32 `F.linear` (MKL) rounds a batch of one otherwise: float noise
        torch.testing.assert_close(alone[:, 0], ours[:, 2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_native_step_gives_the_python_steps_bits(built, dtype):
    model = tiny_llama(initializer_range=0.2).to(dtype)
    _same_as_python(model)


@pytest.mark.skipif(not q4.kernel_available(), reason="torch's int4 CPU kernel is missing here")
def test_the_native_step_on_4bit_weights_gives_the_python_steps_bits(built, tmp_path):
    from test_q4 import _gguf_of

    model = tiny_llama(initializer_range=0.2).to(torch.bfloat16)
    _gguf_of(model, tmp_path / "tiny.gguf")
    weights = q4.cached(tmp_path / "tiny.gguf", tmp_path, model, "fp")
    assert weights is not None
    _same_as_python(model, weights)


_LOAD = "from extok_rag.models import native; m = native.load(); print(m is not None)"


def test_a_later_process_loads_the_build_without_compiling(built):
    assert _child(built, _LOAD) == "True"
    assert _child(built, _LOAD, EXTOK_RAG_NATIVE="0") == "False"  # turned off


def test_a_damaged_build_is_left_aside(built, tmp_path):
    home = tmp_path / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXTOK_RAG_HOME", str(home))
        path = native.library_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x7fELF truncated")
    assert _child(home, _LOAD) == "False"  # not loaded, not compiled (ask never compiles)
    assert not path.exists()  # removed: the next build replaces it


def test_without_a_compiler_the_python_step_decodes(tmp_path):
    code = (
        "from extok_rag.models import native; m = native.load(build=True); "
        "print(m is None, bool(native.failure()))"
    )
    assert _child(tmp_path, code, CXX="/bin/false") == "True True"
    assert not list((tmp_path / "native").glob("*/*.so"))  # nothing half-built left


def test_serve_chat_read_and_eval_build_it_on_a_thread(built):
    """`build_in_background` (the real one; tests otherwise stub it) in a fresh process: a
    thread, and a LlamaStep made before the module landed switches to it. (On the
    built home, so the thread loads rather than compiles: the fixture compiled.)"""
    code = textwrap.dedent(
        """
        from conftest import tiny_llama
        from extok_rag.models import native
        from extok_rag.models.decode_step import LlamaStep
        step = LlamaStep(tiny_llama())
        assert step.native_step() is None
        thread = native.build_in_background()
        assert thread is not None
        thread.join()
        print(native.loaded() is not None, step.native_step() is not None)
        """
    )
    tests = str(Path(__file__).resolve().parents[1])
    out = _child(built, code, PYTHONPATH=tests + os.pathsep + os.environ.get("PYTHONPATH", ""))
    assert out == "True True"

"""`TorchThread`: a server's torch work on one thread, in order, errors raised to the caller;
the serve worker decodes on the thread that loaded its models."""

from __future__ import annotations

import threading

import pytest

from extok_rag.models.torch_thread import TorchThread


def test_calls_run_in_order_on_one_thread():
    thread = TorchThread("t")
    seen: list[tuple[int, str]] = []
    futures = [
        thread.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
        for i in range(5)
    ]
    assert thread.call(lambda: 7) == 7
    assert all(f.done() for f in futures)
    assert seen == [(i, "t") for i in range(5)]
    thread.join(1)


def test_an_error_is_raised_to_the_caller_and_the_thread_goes_on():
    thread = TorchThread()
    with pytest.raises(ValueError, match="bad"):
        thread.call(int, "bad")
    assert thread.call(int, "3") == 3
    thread.join(1)


def test_the_serve_worker_decodes_on_the_thread_that_loaded_the_model(tiny_llm_dir):
    from extok_rag.config import RuntimeConfig
    from extok_rag.models.llm import FrozenLLM
    from extok_rag.serve.worker import Worker

    thread = TorchThread("loader")
    llm = thread.call(FrozenLLM.load, tiny_llm_dir, RuntimeConfig(device="cpu"))
    worker = Worker(llm, max_queue=1, max_batch=1, thread=thread)
    names = {t.name for t in threading.enumerate()}
    assert "loader" in names and "extok-serve-worker" not in names
    worker.close(2)
    assert not any(t.name == "loader" and t.is_alive() for t in threading.enumerate())

"""The worker's continuous batch in process (no HTTP): each request gets its own answer, an
error answers only the request it belongs to, and the queue bounds what waits."""

from __future__ import annotations

import asyncio
import threading

import pytest

from extok_rag.config import GenerationConfig
from extok_rag.errors import InputTooLongError
from extok_rag.models.generation import generate_ids, generate_text
from extok_rag.serve.worker import (
    DONE,
    END,
    ERROR,
    PREPARED,
    TOKEN,
    Prepared,
    QueueFullError,
    Worker,
)


async def events_of(job) -> list[tuple[str, object]]:
    out = []
    while True:
        out.append(await job.next_event())
        if out[-1][0] == END:
            return out


def answer(llm, events, row, cfg) -> None:
    """`events` are PREPARED, TOKEN pieces, DONE, END: `generate_text`'s answer."""
    kinds = [kind for kind, _ in events]
    assert kinds[0] == PREPARED and kinds[-2:] == [DONE, END] and set(kinds[1:-2]) <= {TOKEN}
    assert "".join(v for k, v in events if k == TOKEN) == generate_text(llm, row, cfg)
    assert events[-2][1] == len(list(generate_ids(llm, row, cfg)))


def run(coro_fn):
    return asyncio.run(coro_fn())


def test_errors_answer_their_own_request_only(tiny_llm):
    rows = [tiny_llm.chat_row(["Tell me a story."]), tiny_llm.chat_row(["Why is the sky?"])]
    cfgs = [GenerationConfig(9), GenerationConfig(5, temperature=0.8, seed=3)]

    def bad() -> Prepared:
        raise ValueError("no such index")

    too_long = Prepared(None, rows[0], GenerationConfig(tiny_llm.max_positions))

    async def main():
        worker = Worker(tiny_llm, max_queue=4, max_batch=2)
        try:
            jobs = [
                worker.submit(lambda: Prepared("a", rows[0], cfgs[0])),
                worker.submit(bad),
                worker.submit(lambda: too_long),
                worker.submit(lambda: Prepared("b", rows[1], cfgs[1])),
            ]
            return await asyncio.gather(*map(events_of, jobs)), worker.stats()
        finally:
            worker.close()

    (a, failed, refused, b), stats = run(main)
    answer(tiny_llm, a, rows[0], cfgs[0])
    answer(tiny_llm, b, rows[1], cfgs[1])
    assert [k for k, _ in failed] == [ERROR, END] and isinstance(failed[0][1], ValueError)
    assert [k for k, _ in refused] == [ERROR, END]
    assert isinstance(refused[0][1], InputTooLongError)
    assert (stats.served, stats.cancelled, stats.running, stats.waiting) == (4, 0, 0, 0)


def test_a_failed_step_answers_its_rows_and_the_worker_carries_on(tiny_llm):
    row, cfg = tiny_llm.chat_row(["Tell me a story."]), GenerationConfig(6)

    async def main():
        worker = Worker(tiny_llm, max_queue=1, max_batch=1)
        step, calls = worker._batch.step, []

        def failing_once():
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("out of memory")
            return step()

        worker._batch.step = failing_once
        try:
            failed = await events_of(worker.submit(lambda: Prepared(None, row, cfg)))
            served = await events_of(worker.submit(lambda: Prepared(None, row, cfg)))
            return failed, served
        finally:
            worker.close()

    failed, served = run(main)
    assert [k for k, _ in failed][-2:] == [ERROR, END] and TOKEN in dict(failed)
    answer(tiny_llm, served, row, cfg)


def test_a_full_queue_refuses_and_a_cancelled_waiting_request_never_starts(tiny_llm):
    row, cfg = tiny_llm.chat_row(["Tell me a story."]), GenerationConfig(3)
    gate, prepared = threading.Event(), []

    def slow() -> Prepared:
        gate.wait(10)
        return Prepared(None, row, cfg)

    def never() -> Prepared:
        prepared.append(1)
        return Prepared(None, row, cfg)

    async def main():
        worker = Worker(tiny_llm, max_queue=1, max_batch=1)
        try:
            first = worker.submit(slow)
            while worker.stats().running < 1:  # taken: preparing
                await asyncio.sleep(0.01)
            waiting = worker.submit(never)
            with pytest.raises(QueueFullError):
                worker.submit(never)
            waiting.cancel()
            gate.set()
            return await events_of(first), await events_of(waiting), worker.stats()
        finally:
            worker.close()

    first, waiting, stats = run(main)
    answer(tiny_llm, first, row, cfg)
    assert waiting == [(END, None)] and not prepared
    assert (stats.served, stats.cancelled) == (1, 1)


def test_a_crashed_decoding_loop_is_logged(caplog):
    """The loop runs as a TorchThread task: an exception that ends it is logged, not kept
    silently in its future."""
    from concurrent.futures import Future

    from extok_rag.serve.worker import _report_crash

    loop: Future = Future()
    loop.set_exception(RuntimeError("boom"))
    with caplog.at_level("ERROR", logger="extok_rag.serve"):
        _report_crash(loop)
    assert "the decoding loop stopped" in caplog.text and "boom" in caplog.text
    done: Future = Future()
    done.set_result(None)
    caplog.clear()
    _report_crash(done)
    assert caplog.text == ""

"""Window hashes and `WindowSet` against a plain-Python reference."""

from __future__ import annotations

import random

from extok_rag.datasets.overlap import WINDOW, WindowSet, window_hashes


def shared_window(a: str, b: str, width: int) -> bool:
    windows = {a[i : i + width] for i in range(len(a) - width + 1)}
    return any(b[i : i + width] in windows for i in range(len(b) - width + 1))


def test_equal_windows_hash_equal_and_lengths_fit():
    text = "the quick brown fox jumps over the lazy dog; " * 4
    hashes = window_hashes(text)
    assert hashes.shape == (len(text) - WINDOW + 1,)
    period = len("the quick brown fox jumps over the lazy dog; ")
    assert hashes[0] == hashes[period] and hashes[0] != hashes[1]
    assert window_hashes("short").size == 0
    assert window_hashes("é" * 70).size == 7  # code points, not bytes


def test_window_set_agrees_with_python():
    rng = random.Random(0)
    texts = ["".join(rng.choice("ab ") for _ in range(rng.randrange(4, 40))) for _ in range(300)]
    stored = WindowSet(width=8)
    for text in texts[:150]:
        stored.add(text)
    expected = [any(shared_window(s, t, 8) for s in texts[:150]) for t in texts[150:]]
    assert list(stored.sharing(texts[150:])) == expected
    assert any(expected) and not all(expected)
    assert stored.shares_window(texts[0]) == (len(texts[0]) >= 8)


def test_empty_set_and_empty_query():
    stored = WindowSet()
    assert not stored.shares_window("x" * 100) and len(stored) == 0
    stored.add("y" * 100)
    assert len(stored) == 1 and stored.shares_window("y" * 64) and not stored.sharing([]).size

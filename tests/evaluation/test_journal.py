"""The evaluation journal: records finished pieces durably, reopens them, survives a torn
last line, and never mixes settings."""

from __future__ import annotations

import json

from extok_rag.evaluation.journal import Journal, settings_key


def test_journal_records_reopens_and_drops_a_torn_line(tmp_path):
    journal = Journal.open("qa", {"a": 1}, root=tmp_path)
    journal.record("set/none", {"correct": [True, False]})
    journal.record("set/raw", {"correct": [True, True]})
    with journal.path.open("a") as f:
        f.write('{"key": "set/extok", "data": {"corr')  # killed mid-write
    again = Journal.open("qa", {"a": 1}, root=tmp_path)
    assert again.done == {
        "set/none": {"correct": [True, False]},
        "set/raw": {"correct": [True, True]},
    }
    again.record("set/extok", {"correct": [False]})  # appends after the dropped fragment
    assert Journal.open("qa", {"a": 1}, root=tmp_path).done["set/extok"] == {"correct": [False]}
    lines = [json.loads(x) for x in again.path.read_text().splitlines()]
    assert lines[0] == {"settings": {"a": 1}}
    assert Journal.open("qa", {"a": 2}, root=tmp_path).done == {}  # other settings: no reuse
    assert settings_key({"a": 1, "b": 2}) == settings_key({"b": 2, "a": 1})

"""Finished pieces of a long evaluation, written as they finish, read back on a rerun.

One JSON Lines file per evaluation settings (a hash of everything that changes a number): the
first line holds the settings, every later line one finished piece (an `eval qa` condition of
one set, an `eval lm` window at one length) under its key. Each line is flushed and fsynced
before the evaluation moves on, so a killed run loses at most the piece in flight; a torn last
line (kill -9 mid-write) is ignored and that piece runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from extok_rag.config import home_dir


def settings_key(settings: dict) -> str:
    """A short stable hash of JSON-able settings."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 of a file (a checkpoint's weights, say), for settings that name a file."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class Journal:
    def __init__(self, path: Path, settings: dict) -> None:
        self.path = path
        self.settings = settings
        self.done: dict[str, dict] = self._read() if path.is_file() else {}

    @classmethod
    def open(cls, kind: str, settings: dict, root: Path | None = None) -> Journal:
        """The journal of `kind` ("qa", "lm") for these settings, under `root` (default
        <home>/eval-runs)."""
        folder = (root or home_dir() / "eval-runs") / kind
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / f"{settings_key(settings)}.jsonl", settings)

    def record(self, key: str, data: dict) -> None:
        """Append one finished piece, durably."""
        if not self.path.is_file():
            self._append({"settings": self.settings})
        self._append({"key": key, "data": data})
        self.done[key] = data

    def _append(self, line: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(line, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _read(self) -> dict[str, dict]:
        text = self.path.read_text()
        if not text.endswith("\n"):  # a torn last line (kill -9 mid-write): drop it
            text = text[: text.rfind("\n") + 1]
            with self.path.open("r+") as f:
                f.truncate(len(text.encode()))
        done = {}
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a torn last line: that piece runs again
                continue
            if "key" in entry:
                done[entry["key"]] = entry["data"]
        return done


def open_journal(
    kind: str,
    settings: dict,
    resume: bool,
    pieces: str,
    root: Path | None = None,
    notice=None,
) -> Journal:
    """Open (or, without `resume`, restart) a journal; `notice` hears when a run resumes."""
    journal = Journal.open(kind, settings, root)
    if not resume:
        journal.path.unlink(missing_ok=True)
        journal.done.clear()
    elif journal.done and notice is not None:
        notice(f"resuming {len(journal.done)} finished {pieces} from {journal.path}")
    return journal

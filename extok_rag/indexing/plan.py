"""A run's plan: which corpus documents are new, changed, deleted or unchanged.

Documents are compared by content hash (sha256 of the file's bytes) with the doc hashes of the
table version the run continues from, so an unchanged corpus costs no model work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from extok_rag.indexing.reading import SourceFile


@dataclass
class IndexPlan:
    """What a run does to each corpus document (doc paths)."""

    added: list[SourceFile] = field(default_factory=list)
    changed: list[SourceFile] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def to_index(self) -> list[SourceFile]:
        return self.added + self.changed

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.changed or self.deleted)


def plan_changes(files: Sequence[SourceFile], stored: dict[str, str]) -> IndexPlan:
    """The plan for the corpus `files` over an index holding `stored` ({doc_path: doc_hash})."""
    plan = IndexPlan()
    present = set()
    for file in files:
        present.add(file.rel)
        if file.rel not in stored:
            plan.added.append(file)
        elif stored[file.rel] != file.doc_hash:
            plan.changed.append(file)
        else:
            plan.unchanged.append(file.rel)
    plan.deleted = sorted(set(stored) - present)
    return plan

"""Question-answering sets for `extok-rag eval qa`: the sets and scores (from
`extok_rag.datasets.qa_sets`, re-exported here) and the retrieval corpus written to disk.

The sets, their draws and the SQuAD scores live a layer down so that training data preparation
can hold every evaluation draw out of training (`extok_rag.datasets.qa_splits`); see
`qa_sets.py` for what each set holds and how questions are drawn. Every corpus file holds
"{title}\\n\\n{paragraph}".
"""

from __future__ import annotations

import os
from pathlib import Path

from extok_rag.datasets.qa_sets import (
    PACKAGE,
    QA_SETS,
    QAItem,
    QASet,
    _unique_names,
    answer_contained,
    load_qa_set,
    normalise_answer,
    slugify,
    token_f1,
)
from extok_rag.datasets.qa_sets import hotpot_record as _hotpot_record

__all__ = [
    "PACKAGE",
    "QA_SETS",
    "QAItem",
    "QASet",
    "_hotpot_record",
    "_unique_names",
    "answer_contained",
    "load_qa_set",
    "normalise_answer",
    "slugify",
    "token_f1",
    "write_corpus",
]


# -- corpus on disk ---------------------------------------------------------------------------
def write_corpus(qa: QASet, folder: Path) -> int:
    """Make `folder` hold exactly the set's paragraph files; return how many were (re)written.

    Unchanged files are left alone (same mtime, so an incremental indexer skips them) and `.txt`
    files that are not in the set are deleted."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = sum(_write_if_changed(folder / name, text) for name, text in qa.paragraphs.items())
    _remove_strays(folder, set(qa.paragraphs))
    return written


def _write_if_changed(path: Path, text: str) -> bool:
    data = text.encode("utf-8")
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def _remove_strays(folder: Path, keep: set[str]) -> None:
    for path in sorted(folder.rglob("*.txt")):
        if path.relative_to(folder).as_posix() in keep:
            continue
        path.unlink()
        parent = path.parent
        while parent != folder and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

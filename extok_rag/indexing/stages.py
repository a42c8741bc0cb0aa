"""Engine-neutral stages of an index run: read -> chunk -> group, as plain functions.

The local engine (`engine.py`) calls them in one process; the Ray engine (`ray_engine.py`)
calls `chunk_file` in Ray tasks and `commit_groups` on its driver. Encoding is
`encoding.encode_chunks` (it needs torch, so it lives there); writing and the commit stay in
`build.py`, `commit.py` and `indexes/`.

Why groups are a stage of their own: the models see a group's chunks sorted by length in
padded batches, and a state's last bits depend on the padded length of its batch. Both engines
encode exactly the same groups (whole documents in plan order, cut once a group holds
`commit_tokens` tokens), so they store bitwise the same states and vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from extok_rag.chunking import Chunk, Chunker
from extok_rag.indexing.reading import SourceFile, UnreadableFile, read_text


@dataclass(frozen=True)
class ChunkedFile:
    """A corpus file after reading and chunking: its chunks, or why it was skipped."""

    file: SourceFile
    chunks: list[Chunk] = field(default_factory=list)
    skipped: str | None = None  # the warning line, e.g. "skipped a.txt: binary file (...)"

    @property
    def tokens(self) -> int:
        return sum(c.n_tokens for c in self.chunks)


def chunk_file(file: SourceFile, chunker: Chunker) -> ChunkedFile:
    """Read one file and cut it into chunks; an unreadable or empty one is marked skipped."""
    try:
        chunks = chunker.split(file.rel, read_text(file))
    except UnreadableFile as reason:
        return ChunkedFile(file, skipped=f"skipped {file.rel}: {reason}")
    if not chunks:
        return ChunkedFile(file, skipped=f"skipped {file.rel}: no text in it")
    return ChunkedFile(file, chunks)


def chunk_files(files: Iterable[SourceFile], chunker: Chunker) -> Iterator[ChunkedFile]:
    """`chunk_file` over files, lazily, in order."""
    for file in files:
        yield chunk_file(file, chunker)


def commit_groups(
    chunked: Iterable[ChunkedFile],
    commit_tokens: int,
    on_skip: Callable[[ChunkedFile], None],
) -> Iterator[list[ChunkedFile]]:
    """Whole documents in order, grouped until a group holds `commit_tokens` tokens (the last
    group may hold fewer). Skipped files go to `on_skip` as they come and into no group."""
    group: list[ChunkedFile] = []
    tokens = 0
    for item in chunked:
        if item.skipped is not None:
            on_skip(item)
            continue
        group.append(item)
        tokens += item.tokens
        if tokens >= commit_tokens:
            yield group
            group, tokens = [], 0
    if group:
        yield group


@dataclass(frozen=True)
class GroupSize:
    """How much a commit group holds (what progress bars and reports count)."""

    files: int
    bytes: int
    chunks: int
    tokens: int

    @classmethod
    def of(cls, group: Sequence[ChunkedFile]) -> GroupSize:
        return cls(
            files=len(group),
            bytes=sum(item.file.size for item in group),
            chunks=sum(len(item.chunks) for item in group),
            tokens=sum(item.tokens for item in group),
        )


def group_chunks(group: Sequence[ChunkedFile]) -> tuple[list[Chunk], dict[str, str]]:
    """A group's chunks in order, and {doc_path: doc_hash} for its documents."""
    chunks = [c for item in group for c in item.chunks]
    return chunks, {item.file.rel: item.file.doc_hash for item in group}

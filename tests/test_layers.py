"""Layering contracts, read off the source (every import, at module level or inside a function):
the read side opens an index through `extok_rag.indexes`, never through the indexer, and the
storage layer stays free of torch and of everything above it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "extok_rag"

# Modules that read an index and must not import the writer (`extok_rag.indexing`).
READ_SIDE = (
    "ask",
    "spans.py",
    "serve",
    "integrations/llama_index.py",
    "integrations/ray_serve.py",
    "evaluation/qa.py",
    "cli/ask_cmd.py",
    "cli/serve_cmd.py",
    "cli/generate_cmd.py",
)


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files(*parts: str) -> list[Path]:
    out: list[Path] = []
    for part in parts:
        path = PACKAGE / part
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def test_the_read_side_never_imports_the_indexer():
    offenders = {
        str(f.relative_to(PACKAGE)): sorted(
            m for m in imports_of(f) if m.startswith("extok_rag.indexing")
        )
        for f in files(*READ_SIDE)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_index_storage_imports_nothing_above_it():
    allowed = ("extok_rag.indexes", "extok_rag.config", "extok_rag.errors")
    for f in files("indexes"):
        ours = {m for m in imports_of(f) if m.startswith("extok_rag")}
        assert all(m.startswith(allowed) for m in ours), (f.name, ours)
        assert "torch" not in {m.split(".")[0] for m in imports_of(f)}, f.name


def test_checkpoint_configs_are_read_without_model_code():
    ours = {
        m for m in imports_of(PACKAGE / "models" / "checkpoint.py") if m.startswith("extok_rag")
    }
    assert ours <= {"extok_rag.config", "extok_rag.errors"}
    defaults = imports_of(PACKAGE / "models" / "defaults.py")
    assert "extok_rag.models.extensible_tokenizer" not in defaults


# The package's layers, low to high. A module imports only from lower layers; siblings in one
# layer never import each other. The package root is the public façade: it imports the read
# path lazily (`extok_rag.open`), and any module may read its `__version__`.
LAYERS = (
    ("errors",),
    ("config",),
    ("models", "chunking", "datasets"),
    ("spans",),
    ("indexes",),
    ("indexing", "ask", "training"),
    ("evaluation",),
    ("serve",),
    ("integrations",),  # above serve: Ray Serve deploys the served app
    ("cli",),
)


def top_level(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "extok_rag" else None


def test_no_module_imports_upward_or_sideways():
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    offenders = []
    for f in PACKAGE.rglob("*.py"):
        rel = f.relative_to(PACKAGE)
        if rel == Path("__init__.py"):
            continue  # the façade
        here = rel.parts[0].removesuffix(".py")
        assert here in rank, f"{rel}: add its top-level name to LAYERS"
        for module in imports_of(f):
            there = top_level(module)
            if there is None or there == here:
                continue
            assert there in rank, f"{rel} imports {module}: add it to LAYERS"
            if rank[there] >= rank[here]:
                offenders.append(f"{rel} -> {module}")
    assert offenders == []

"""Write one named section of the checkout's docs/benchmarks.md, leaving the other sections as
they are: each benchmark script and `eval … --write-docs` owns a section delimited by
`<!-- begin NAME -->` / `<!-- end NAME -->`. `benchmarks/report.py` re-exports this module for
the scripts under `benchmarks/`."""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path

from extok_rag.config import cpu_description
from extok_rag.errors import ExtokError

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nEvery number here was measured by a script under `benchmarks/`; each "
    "section names its script and command. Machines are noisy: medians of repeated runs.\n"
)


def machine_line() -> str:
    import torch

    return (
        f"{platform.machine()} {cpu_description()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} "
        f"({torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}), "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; "
        f"measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


def settings_text(settings: dict) -> str:
    """A config's keys and JSON values on one line, as the study tables show them."""
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in settings.items())


def check_checkout(doc: Path | None = None) -> Path:
    """The benchmarks document, or a one-line error outside a source checkout."""
    doc = doc or DOC
    if not (doc.parent.parent / "pyproject.toml").is_file():
        raise ExtokError(f"--write-docs needs a source checkout ({doc} is not in one)")
    return doc


def write_section(name: str, body: str, doc: Path | None = None) -> None:
    doc = doc or DOC
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text.rstrip() + "\n")

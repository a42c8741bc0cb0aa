"""Write one named section of docs/benchmarks.md, leaving the other sections as they are.

Each benchmark script owns a section delimited by `<!-- begin NAME -->` / `<!-- end NAME -->`.
"""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path

from extok_rag.config import cpu_description

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
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


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text.rstrip() + "\n")

"""The storage layer must load without torch: the query path imports it before any model."""

from __future__ import annotations

import subprocess
import sys


def test_indexes_do_not_import_torch():
    code = (
        "import sys\n"
        "import extok_rag.indexes, extok_rag.indexes.manifest, extok_rag.indexes.table\n"
        "import extok_rag.indexes.vectors, extok_rag.indexes.schema, extok_rag.indexes.codec\n"
        "import extok_rag.indexes.rows\n"
        "from extok_rag.indexes import VectorIndex, ChunkTable\n"
        "import numpy as np, tempfile, pathlib\n"
        "VectorIndex.build(np.arange(3), np.eye(3, 4, dtype=np.float32)).search(np.eye(1, 4), 1)\n"
        "ChunkTable.create(pathlib.Path(tempfile.mkdtemp()), dim=4, d=2).count()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

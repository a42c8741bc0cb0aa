"""The datasets layer loads without torch or transformers (training and evaluation both sit
above it; readers of the training files must stay cheap)."""

from __future__ import annotations

import subprocess
import sys


def test_datasets_do_not_import_torch():
    code = (
        "import sys\n"
        "import extok_rag.datasets.packages, extok_rag.datasets.qa_sets\n"
        "import extok_rag.datasets.qa_splits, extok_rag.datasets.sword\n"
        "import extok_rag.datasets.training_files, extok_rag.datasets.overlap\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "assert not bad, bad\n"
        "higher = sorted(m for m in sys.modules if m.startswith(('extok_rag.training', "
        "'extok_rag.evaluation', 'extok_rag.models')))\n"
        "assert not higher, higher\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

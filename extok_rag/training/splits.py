"""The documents' train / validation split, tokenized with the LLM's tokenizer, joined with a
separator token and packed into `seq_len` sequences: `train.bin` and `val.bin`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from extok_rag.errors import ExtokError
from extok_rag.training.data_settings import DataSettings, ProgressSink, seeded_rank
from extok_rag.training.documents import Document, SourceStats
from extok_rag.training.shards import pack_documents, write_shard

TRAIN_FILE, VAL_FILE = "train.bin", "val.bin"
TOKENIZE_BATCH = 64  # documents per tokenizer call


def separator_id(tokenizer) -> int:
    """Document separator: `<|endoftext|>` where the vocabulary has it (SmolLM2's pre-training
    separator; the Instruct tokenizer's `eos_token` is the chat-turn end `<|im_end|>`), else
    the tokenizer's EOS."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    if tokenizer.eos_token_id is None:
        raise ExtokError("the tokenizer has neither <|endoftext|> nor an EOS token")
    return int(tokenizer.eos_token_id)


def split_documents(documents: list[Document], settings: DataSettings) -> dict[str, list[Document]]:
    """Train / validation by a seeded hash of the document id; each side in a seeded order."""
    val_cut = int(settings.val_fraction * 2**64)
    splits: dict[str, list[Document]] = {"train": [], "val": []}
    for doc in documents:
        is_val = seeded_rank(settings.seed, "val:" + doc.doc_id) < val_cut
        splits["val" if is_val else "train"].append(doc)
    for docs in splits.values():
        docs.sort(key=lambda d: seeded_rank(settings.seed, "order:" + d.doc_id))
    return splits


def _tokenize(
    docs: list[Document], tokenizer, by_name: dict[str, SourceStats], progress: ProgressSink
) -> list[list[int]]:
    """Token ids of each document, in batches; each source's `tokens` counts its documents'
    tokens plus one separator per document."""
    ids: list[list[int]] = []
    for i in range(0, len(docs), TOKENIZE_BATCH):
        batch = docs[i : i + TOKENIZE_BATCH]
        encoded = tokenizer([d.text for d in batch], add_special_tokens=False)["input_ids"]
        for doc, tokens in zip(batch, encoded, strict=True):
            by_name[doc.source].tokens += len(tokens) + 1
        ids += encoded
        progress.advance(len(batch))
    return ids


def tokenize_and_write(
    splits: dict[str, list[Document]],
    stats: list[SourceStats],
    settings: DataSettings,
    tokenizer,
    out_dir: Path,
    progress: ProgressSink,
) -> dict:
    """Write both shards; return the `meta.json` entries for the settings, the separator, each
    split and each source."""
    sep = separator_id(tokenizer)
    by_name = {s.name: s for s in stats}
    meta: dict = {"settings": settings.to_dict(), "separator_id": sep}
    progress.begin("tokenizing", sum(map(len, splits.values())))
    for split, docs in splits.items():
        ids = _tokenize(docs, tokenizer, by_name, progress)
        rows, dropped = pack_documents(ids, sep, settings.seq_len)  # rows: (N, seq_len)
        name = TRAIN_FILE if split == "train" else VAL_FILE
        meta[split] = {
            "file": name,
            "documents": len(docs),
            "chars": sum(len(d.text) for d in docs),
            "sequences": int(rows.shape[0]),
            "tokens": int(rows.size),
            "tail_tokens_dropped": dropped,
            "sha256": write_shard(out_dir / name, rows),
        }
    meta["sources"] = [asdict(s) for s in stats]
    return meta

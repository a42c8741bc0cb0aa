"""The `llm` span scorer: a first cheap pass of the frozen LLM over every chunk compressed at
ATTENTION_K, reading how much attention the question pays to each span's embeddings."""

from __future__ import annotations

import numpy as np
import torch

from extok_rag.ask.retrieval import chunk_embeddings
from extok_rag.models.ask_frame import ask_frame
from extok_rag.models.mixed_input import EmbeddingSegment

ATTENTION_K = 8  # the first pass reads every chunk at this k (cheap: ~1/8 of raw's positions)


@torch.inference_mode()
def attention_scores(llm, question, chunks, spans, headers, stride) -> np.ndarray:
    """A first cheap pass: every chunk compressed at ATTENTION_K, then the question; a span's
    score is the attention the question's closing tokens pay to the embeddings that cover it
    (mean over layers, heads and those tokens; mean over the span's embeddings)."""
    k = max(ATTENTION_K, stride) // stride * stride
    contexts = [chunk_embeddings(c, k, stride) for c in chunks]
    row = llm.chat_row(ask_frame(question, contexts, headers))
    batch = llm.batch([row])
    model = llm.model
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")  # sdpa returns no attention weights
    try:
        out = model(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            output_attentions=True,
            use_cache=False,
            logits_to_keep=1,
        )
    finally:
        model.set_attn_implementation(previous)
    starts = np.cumsum([0, *(len(seg) for seg in row)])
    query = slice(int(starts[-2]), int(starts[-1]))  # the closing segment: "Answer ...: {q}"
    att = torch.stack([a[0, :, query].float().mean(dim=(0, 1)) for a in out.attentions])
    received = att.mean(0).cpu().numpy()  # (T,) attention each position receives
    embed_at = [int(starts[i]) for i, seg in enumerate(row) if isinstance(seg, EmbeddingSegment)]
    scores = []
    for span in spans:
        lo, hi = span.start // k, -(-span.end // k)  # the embeddings covering the span
        scores.append(float(received[embed_at[span.chunk] + lo : embed_at[span.chunk] + hi].mean()))
    return np.array(scores)

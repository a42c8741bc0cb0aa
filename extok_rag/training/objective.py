"""The two-stream objective (paper §2.2, Eq. 3), the reconstruction warm-up, and the losses of
the frame objectives (`frame.py`: answer NLL, and KL to a raw-context teacher), batched.

Pass 1 encodes every chunk of a packed sequence on its own (one batched tokenizer call).
Pass 2 is one batched call of the frozen LLM, one row per predicted chunk:

    ar:             row i = [et(chunk 1) … et(chunk i-1)] + raw chunk i     (i = 2..C)
    reconstruction: row i = [et(chunk i)]                 + raw chunk i     (i = 1..C)

The loss is the mean next-token NLL over the raw tokens of every row (optionally only the first
m of each chunk, which are then the only raw tokens in the row), so every gradient reaching the
tokenizer flows through the frozen LLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from extok_rag.config import DownscaleMethod
from extok_rag.models.extensible_tokenizer import ExtensibleTokenizer
from extok_rag.models.length_groups import batch_overhead, length_groups
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import EmbeddingSegment, Row, TokenSegment, row_length
from extok_rag.models.transfer import to_device


@dataclass
class ChunkLosses:
    """Per-row summed NLL and target counts, so callers can average or compare rows; and what
    training adds to a row's NLL besides (`penalty`: the content-contrast hinge)."""

    nll: torch.Tensor  # (R,) summed NLL over each row's targets
    count: torch.Tensor  # (R,) number of targets per row
    penalty: torch.Tensor | None = None  # (R,) summed over the same targets; None: none

    def mean(self) -> torch.Tensor:
        """The mean NLL per target (what a run logs as its loss)."""
        return self.nll.sum() / self.count.sum().clamp(min=1)

    def penalty_mean(self) -> torch.Tensor:
        """The penalty per target (0 without one)."""
        if self.penalty is None:
            return self.nll.new_zeros(())
        return self.penalty.sum() / self.count.sum().clamp(min=1)

    def objective(self) -> torch.Tensor:
        """What training minimises: the mean NLL plus the penalty, per target."""
        return self.mean() + self.penalty_mean()


def encode_sequence(
    tokenizer: ExtensibleTokenizer, chunks: torch.Tensor, k: int, method: DownscaleMethod
) -> list[torch.Tensor]:
    """Pass 1: chunks (C, L) ids -> C tensors of extensible embeddings (ceil(L/k), d)."""
    return encode_sequences(tokenizer, chunks[None], [k], method)[0]


def encode_sequences(
    tokenizer: ExtensibleTokenizer,
    chunks: torch.Tensor,
    ks: list[int],
    method: DownscaleMethod,
) -> list[list[torch.Tensor]]:
    """Pass 1 for a batch: chunks (B, C, L) ids, sequence b down-scaled by ks[b] -> B lists
    of C tensors (ceil(L/k_b), d). Every chunk is encoded on its own, all in one call."""
    B, C, _L = chunks.shape
    states = tokenizer(to_device(chunks.flatten(0, 1), tokenizer.device)).unflatten(0, (B, C))
    return [
        list(tokenizer.downscale(s, k, method).unbind(0)) for s, k in zip(states, ks, strict=True)
    ]


def ar_rows(chunks: torch.Tensor, embeds: list[torch.Tensor], raw_len: int = 0) -> list[Row]:
    """Rows predicting chunk i from the embeddings of all earlier chunks (i >= 2).

    `raw_len > 0` keeps only the first `raw_len` tokens of each predicted chunk: the same loss
    as scoring only those tokens, at a fraction of the compute.
    """
    raw = chunks[:, :raw_len] if raw_len else chunks
    return [
        [EmbeddingSegment(torch.cat(embeds[:i])), TokenSegment(raw[i])]
        for i in range(1, chunks.shape[0])
    ]


def reconstruction_rows(
    chunks: torch.Tensor, embeds: list[torch.Tensor], raw_len: int = 0
) -> list[Row]:
    """Rows predicting each chunk (or its first `raw_len` tokens) from its *own* embeddings."""
    raw = chunks[:, :raw_len] if raw_len else chunks
    return [[EmbeddingSegment(e), TokenSegment(c)] for c, e in zip(raw, embeds, strict=True)]


def row_losses(llm: FrozenLLM, rows: list[Row], overhead: int | None = None) -> ChunkLosses:
    """Pass 2: NLL of the scored raw tokens of each row, in the rows' order. The rows run in a
    few batches of similar length (`length_groups`; `overhead`: a batch's cost in positions,
    by default the device's): padded to the longest in one batch, a micro-step mixing k from
    1 to 8 computed 2-2.5 positions per real one."""
    lengths = [row_length(row) for row in rows]
    nll, count, order = [], [], []
    if overhead is None:
        overhead = batch_overhead(llm.device)
    for group in length_groups(lengths, overhead):
        batch = llm.batch([rows[i] for i in group], padding_side="right")
        nll.append(llm.token_losses(batch).sum(dim=1))  # (G,)
        count.append(batch.next_token_targets.sum(dim=1))  # (G,)
        order += group
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    back = to_device(back, nll[0].device)
    return ChunkLosses(torch.cat(nll)[back], torch.cat(count)[back])


def distill_losses(
    llm: FrozenLLM, student: list[Row], teacher: list[Row], temperature: float = 1.0
) -> ChunkLosses:
    """KL(teacher || student) of the next-token distributions at the scored (answer) tokens.

    Row i of `teacher` holds the same scored tokens as row i of `student` (raw context instead
    of compressed), so their scored positions pair up in order. The teacher runs without grad;
    its logits exist only at those positions. Scaled by T² (Hinton et al.)."""
    s_batch = llm.batch(student, padding_side="right")
    with torch.no_grad():
        t_batch = llm.batch(teacher, padding_side="right")
        target = F.log_softmax(llm.scored_logits(t_batch) / temperature, dim=-1)  # (N, V)
    if len(s_batch.scored) != len(t_batch.scored):  # counted on the host: no device read
        raise ValueError("teacher and student rows must score the same tokens")
    log_q = F.log_softmax(llm.scored_logits(s_batch) / temperature, dim=-1)  # (N, V)
    kl = F.kl_div(log_q, target, log_target=True, reduction="none").sum(-1) * temperature**2
    per_row = s_batch.per_position(kl).sum(dim=1)  # (R,)
    return ChunkLosses(per_row, s_batch.next_token_targets.sum(dim=1))


def contrast_losses(
    llm: FrozenLLM, own: list[Row], other: list[Row], bare: list[Row], weight: float
) -> ChunkLosses:
    """The answer NLL of the `own` rows, plus the content-contrast hinge: row i of `other`
    asks the same question over another item's paragraphs, row i of `bare` with no context.
    Whatever the other paragraphs take off the no-context NLL is a gain that cannot come
    from content (format, answer type), and is penalised:

        penalty_i = weight * max(0, NLL(bare_i) - NLL(other_i))    (summed over answer tokens)

    The bare rows hold no embeddings, so their NLL is the frozen LLM's: run without grad."""
    n = len(own)
    both = row_losses(llm, own + other)  # one length-grouped call for both sets
    with torch.no_grad():
        floor = row_losses(llm, bare).nll  # (R,)
    gain = (floor - both.nll[n:]).clamp(min=0)  # (R,)
    return ChunkLosses(both.nll[:n], both.count[:n], weight * gain)

"""Rows of similar length batched together, so a padded batch computes little padding.

A training micro-step mixes k from {1, 2, 4, 8}: a qa row at ×1 reads three paragraphs of 256
raw-length states, the same row at ×8 about a ninth of that. Padded to the longest, 64 such rows
cost 58K positions for 22K real ones (the v3 GPU recipe, measured). Sorted by length and cut
into a few batches, they cost about the real positions plus each batch's fixed cost.

The cut is exact (dynamic programming over the sorted lengths): it minimises

    sum over groups of (rows in group x longest row in group) + overhead x groups

where `overhead` is one more batch's fixed cost (kernel launches, Python) in positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

GPU_BATCH_OVERHEAD = 4096  # one more batch's forward + backward, in positions, on a GPU
CPU_BATCH_OVERHEAD = 256  # the same on these CPUs
# On the H200 a training micro-step ran ~50K padded positions in ~0.33 s with ~8K ops: about
# 6 µs a position against tens of milliseconds of launches and Python per extra batch. Here a
# position costs ~0.7 ms and a batch's ~8K ops ~0.1-0.2 s.


def batch_overhead(device: torch.device) -> int:
    """One more batch's fixed cost on `device`, in positions."""
    return GPU_BATCH_OVERHEAD if device.type == "cuda" else CPU_BATCH_OVERHEAD


def length_groups(lengths: Sequence[int], overhead: int) -> list[list[int]]:
    """Indices of `lengths`, grouped: each group a run of the lengths sorted (longest first),
    the groups chosen to minimise padded positions + `overhead` per group. Order within a
    group is by length; callers put results back by index."""
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    L = [lengths[i] for i in order]
    # A group starts where the sorted length changes: starting it later inside a run of equal
    # lengths only moves rows to the longer group before it.
    starts = [i for i in range(len(L)) if i == 0 or L[i] != L[i - 1]]
    ends = [*starts[1:], len(L)]
    best: dict[int, tuple[int, int]] = {0: (0, 0)}  # end -> (cost of rows before it, its start)
    for j in ends:
        best[j] = min((best[i][0] + (j - i) * L[i] + overhead, i) for i in starts if i < j)
    groups: list[list[int]] = []
    j = len(L)
    while j > 0:
        i = best[j][1]
        groups.append(order[i:j])
        j = i
    return groups[::-1]


def padded_positions(lengths: Sequence[int], groups: Sequence[Sequence[int]]) -> int:
    """Positions the grouped batches compute, padding included."""
    return sum(len(g) * max(lengths[i] for i in g) for g in groups if g)

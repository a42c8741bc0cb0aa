"""Host tensors to the device without waiting for the device's queue.

A plain copy from pageable host memory to a GPU waits for every kernel queued before it: in a
training step the host then cannot build the next micro-step's rows (tokens, spans, chat
templates) while the card still runs the last backward. A copy from pinned memory with
`non_blocking` only joins the queue; torch's caching host allocator keeps the pinned block
until the copy is done. On a CPU it is a plain `.to`.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` (on the host) on `device`, queued behind the device's work, not waiting on it."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)

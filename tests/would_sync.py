"""Counting the operations that would make the host wait for a GPU, on a CPU.

On a GPU the host queues kernels and runs ahead: it builds the next micro-step's rows while the
card computes. An operation that needs a device tensor's *values* on the host stops that: a
Python bool / int / float of it (`aten._local_scalar_dense`), and results whose shape depends on
its values (`nonzero`, `masked_select`, boolean indexing). `WouldSync` watches the aten calls of
a block and counts those whose inputs descend from the device's tensors (the models' weights and
whatever `models.transfer.to_device` moved): on this CPU nothing waits, but the count is the
number of times a GPU would have.
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Iterable

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary

aten = torch.ops.aten
HOST_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default}
VALUE_SHAPED = {aten.nonzero.default, aten.masked_select.default, aten.repeat_interleave.Tensor}


def _boolean_index(func, args) -> bool:
    return func is aten.index.Tensor and any(
        i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1]
    )


class WouldSync(TorchDispatchMode):
    """`with WouldSync(weights) as w: ...`; then `w.events`: (op, where) -> count."""

    def __init__(self, device_tensors: Iterable[torch.Tensor]):
        super().__init__()
        self.on_device = WeakTensorKeyDictionary()
        for t in device_tensors:
            self.mark(t)
        self.events: collections.Counter = collections.Counter()

    def mark(self, t: object) -> None:
        if isinstance(t, torch.Tensor):
            self.on_device[t] = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        device = any(t in self.on_device for t in inputs)
        if device and (func in HOST_READS or func in VALUE_SHAPED or _boolean_index(func, args)):
            ours = [f for f in traceback.extract_stack() if "/extok_rag/" in f.filename]
            last = ours[-1] if ours else None
            where = f"{last.filename.split('/extok_rag/')[-1]}:{last.lineno}" if last else "?"
            self.events[(str(func), where)] += 1
        out = func(*args, **kwargs)
        if device:
            for t in pytree.tree_leaves(out):
                self.mark(t)
        return out


def watching_transfers(monkeypatch, mode: WouldSync) -> None:
    """Mark every tensor `to_device` moves (in each module that imported it) as on the device."""
    import sys

    from extok_rag.models import transfer

    original = transfer.to_device

    def to_device(tensor, device):
        out = original(tensor, device)
        mode.mark(out)
        return out

    for name, module in list(sys.modules.items()):
        if name.startswith("extok_rag") and getattr(module, "to_device", None) is original:
            monkeypatch.setattr(module, "to_device", to_device)

# Copyright (c) mmekd contributors. All rights reserved.
"""Keep a model's buffers (BatchNorm statistics and counters) and put them
back, in a constant number of calls per iteration.

The buffers are grouped by device and dtype once; each group has one flat
snapshot tensor (with views of it shaped like the buffers) and two flat
work tensors (the values now; the values chosen, split once into views), so
taking is one ``cat`` into the snapshot, restoring one
``torch._foreach_copy_``, and restoring where a
flag on the device is set (no host sync) one ``cat``, one ``where`` and one
``_foreach_copy_`` per group, all into preallocated tensors. No Python loop
over the buffers runs per iteration.

Example::

    >>> snapshot = BufferSnapshot(model)
    >>> snapshot.take()                  # before the forward
    >>> snapshot.restore_where(skip)     # skip: a bool tensor on the device
"""
from typing import Dict, List, Tuple

import torch
import torch.nn as nn


class _Group:
    """Buffers of one device and dtype and their flat snapshot."""

    def __init__(self, buffers: List[torch.Tensor]):
        self.buffers = buffers
        self.flat_buffers = [b.view(-1) for b in buffers]
        self.sizes = [b.numel() for b in buffers]
        like = dict(dtype=buffers[0].dtype, device=buffers[0].device)
        # the values at take(); the values now; the restored values
        self.snapshot, self.now, self.chosen = (
            torch.empty(sum(self.sizes), **like) for _ in range(3))
        self.views = [
            v.view(b.shape)
            for v, b in zip(torch.split(self.snapshot, self.sizes), buffers)
        ]
        self.chosen_views = list(torch.split(self.chosen, self.sizes))

    def take(self) -> None:
        torch.cat(self.flat_buffers, out=self.snapshot)

    def restore(self) -> None:
        torch._foreach_copy_(self.buffers, self.views)

    def restore_where(self, flag: torch.Tensor) -> None:
        torch.cat(self.flat_buffers, out=self.now)
        torch.where(flag, self.snapshot, self.now, out=self.chosen)
        torch._foreach_copy_(self.flat_buffers, self.chosen_views)


class BufferSnapshot:
    """The buffers of ``model`` as they were at :meth:`take`.

    Built once per model; it is rebuilt when the model's buffers are
    replaced (``model.to(...)`` makes new tensors; the first buffer is
    compared at every :meth:`take`).

    Args:
        model (nn.Module): The model.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._build()

    def _build(self) -> None:
        buffers = [b for b in self.model.buffers() if b.numel()]
        for b in buffers:
            if not b.is_contiguous():
                raise ValueError(
                    f'a buffer of shape {tuple(b.shape)} is not contiguous: '
                    'the non-finite check keeps contiguous buffers only')
        groups: Dict[Tuple, List[torch.Tensor]] = {}
        for b in buffers:
            groups.setdefault((b.device, b.dtype), []).append(b)
        self._groups = [_Group(g) for g in groups.values()]
        self._first = next(self.model.buffers(), None)

    def take(self) -> None:
        """Copy the buffers (their values now) into the snapshot."""
        first = next(self.model.buffers(), None)
        if first is not self._first:
            self._build()
        for group in self._groups:
            group.take()

    def restore(self) -> None:
        """Put every buffer back to its value at :meth:`take`."""
        for group in self._groups:
            group.restore()

    def restore_where(self, flag: torch.Tensor) -> None:
        """:meth:`restore` where the bool tensor ``flag`` is set, on the
        device (no host sync)."""
        for group in self._groups:
            group.restore_where(flag.to(group.now.device))

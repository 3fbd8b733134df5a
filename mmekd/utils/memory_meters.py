# Copyright (c) mmekd contributors. All rights reserved.
"""Instruments for the memory of a training step: the bytes autograd saves
for backward (:class:`SavedTensorMeter`, any device), every CPU tensor
alive (:class:`LiveMemoryMeter`) and a model's static bytes
(:func:`static_bytes`).

Example::

    with SavedTensorMeter(model) as meter:
        model.train_step(data, optim_wrapper)
    print(meter.peak)  # bytes of activations saved for backward, at most
"""
import gc
from typing import Dict, Optional

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile


class SavedTensorMeter:
    """Peak bytes of the tensors autograd saves for backward (activations),
    not counting ``module``'s parameters and buffers. Each storage counts
    once however often it is saved.

    Args:
        module (nn.Module, optional): Its parameters and buffers are not
            activations.
    """

    def __init__(self, module: Optional[nn.Module] = None):
        self._static = set()
        if module is not None:
            for t in list(module.parameters()) + list(module.buffers()):
                self._static.add(t.untyped_storage().data_ptr())
        self._refs: Dict[int, int] = {}
        self.live = 0
        self.peak = 0
        self._hooks = None

    class _Handle:

        def __init__(self, meter, tensor, key):
            self.meter, self.tensor, self.key = meter, tensor, key

        def __del__(self):
            self.meter._release(self.key, self.tensor)

    def _release(self, key, tensor):
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live -= tensor.untyped_storage().nbytes()

    def _pack(self, tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self._static or storage.nbytes() == 0:
            return tensor
        if key not in self._refs:
            self._refs[key] = 0
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self._refs[key] += 1
        return self._Handle(self, tensor, key)

    @staticmethod
    def _unpack(packed):
        if isinstance(packed, SavedTensorMeter._Handle):
            return packed.tensor
        return packed

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(
            self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        return False


class LiveMemoryMeter:
    """Peak bytes of CPU memory that tensors allocated inside the ``with``
    block hold at once (the profiler's allocation events, allocations minus
    frees in time order; frees of blocks allocated before are not seen),
    and the bytes they still hold at its end (leaks and reference cycles
    show there). Unlike :class:`SavedTensorMeter` it sees every tensor:
    gradients, temporaries, outputs kept by reference. Python's cyclic
    garbage collector is off inside (collected first), so memory that only
    it would free counts, as between its runs in training. CPU only.
    """

    def __enter__(self):
        gc.collect()
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        self._prof = profile(
            activities=[ProfilerActivity.CPU], profile_memory=True)
        self._prof.__enter__()
        return self

    def __exit__(self, *exc):
        self._prof.__exit__(*exc)
        if self._gc_was_enabled:
            gc.enable()
        events = sorted(
            (e for e in self._prof.profiler.kineto_results.events()
             if e.name() == '[memory]'
             and e.device_type() == torch.autograd.DeviceType.CPU),
            key=lambda e: e.start_ns())
        live = self.peak = 0
        for e in events:
            live += e.nbytes()
            self.peak = max(self.peak, live)
        self.end = live
        self.num_events = len(events)
        return False


def static_bytes(model: nn.Module, optim_wrapper) -> int:
    """Bytes of parameters, buffers, optimizer state and the gradients that
    exist now (``zero_grad`` frees them between steps: those a step
    allocates are in its measured peak, and must not be counted twice).

    Args:
        model (nn.Module): The model.
        optim_wrapper: An MMEngine optim wrapper (its ``optimizer.state``).
    """
    total = sum(t.numel() * t.element_size()
                for t in list(model.parameters()) + list(model.buffers()))
    total += sum(p.grad.numel() * p.grad.element_size()
                 for p in model.parameters() if p.grad is not None)
    for state in optim_wrapper.optimizer.state.values():
        for v in state.values():
            if torch.is_tensor(v):
                total += v.numel() * v.element_size()
    return total

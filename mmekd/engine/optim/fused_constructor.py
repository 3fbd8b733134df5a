# Copyright (c) mmekd contributors. All rights reserved.
"""An optimizer wrapper constructor that picks torch's fused (or foreach)
optimizer implementation where the device supports it."""
import inspect
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIMIZERS
from torch.utils._foreach_utils import (_get_foreach_kernels_supported_devices,
                                        _get_fused_kernels_supported_devices)

from mmekd.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmekd.vocabulary import unwrap_model

# (name, parameter) pairs, as ``named_parameters`` gives them.
Params = Sequence[Tuple[str, torch.Tensor]]
# The torch optimizers with a fused kernel, and the device types they have
# it on (``None``: every type of ``_get_fused_kernels_supported_devices()``).
# Adagrad's fused implementation is CPU only.
FUSED_DEVICES: Dict[type, Optional[Tuple[str, ...]]] = {
    torch.optim.SGD: None,
    torch.optim.Adam: None,
    torch.optim.AdamW: None,
    torch.optim.Adagrad: ('cpu', ),
}


def fused_devices(optimizer_cls: type) -> Tuple[str, ...]:
    """The device types on which ``optimizer_cls`` has a fused kernel.

    Args:
        optimizer_cls (type): An optimizer class.

    Returns:
        tuple[str]: Device types (``'cpu'``, ``'cuda'``, ...); empty if the
        class is not one of :data:`FUSED_DEVICES` (or a subclass of one).
    """
    supported = tuple(_get_fused_kernels_supported_devices())
    for cls, devices in FUSED_DEVICES.items():
        if issubclass(optimizer_cls, cls):
            if devices is None:
                return supported
            return tuple(d for d in devices if d in supported)
    return ()


def _accepts(optimizer_cls: type, name: str) -> bool:
    try:
        params = inspect.signature(optimizer_cls).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _unsupported(params: Params,
                 devices: Sequence[str],
                 floating: bool = True) -> Optional[Tuple[str, torch.Tensor]]:
    """The first ``(name, param)`` that is not on one of ``devices`` (or,
    with ``floating``, not a floating-point tensor), or ``None``."""
    for name, p in params:
        float_ok = torch.is_floating_point(p) or not floating
        if p.device.type not in devices or not float_ok:
            return name, p
    return None


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FusedOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """:class:`DefaultOptimWrapperConstructor` that asks torch for its fused
    (one kernel for all parameters) or foreach (batched) optimizer step.

    If the optimizer class accepts ``fused`` and ``optimizer`` sets neither
    ``fused`` nor ``foreach``, the optimizer is built with

    - ``fused=True`` when every parameter of the model is a floating-point
      tensor on a device type with a fused kernel for that optimizer (SGD,
      Adam, AdamW: ``_get_fused_kernels_supported_devices()``, CPU and CUDA
      among them; Adagrad: CPU only);
    - else ``foreach=True`` when the class accepts ``foreach`` and every
      parameter is on a device type with foreach kernels
      (``_get_foreach_kernels_supported_devices()``: CUDA, not CPU), as
      torch's own default does;
    - else as configured (torch's own default).

    What was chosen, and why, is logged once per build. ``fused`` or
    ``foreach`` set in the config (any value, ``None`` included: torch's
    own default) is kept as it is. ``fused=True`` for a parameter the fused
    kernel does not take (device type or dtype) raises a ``ValueError``
    naming the field, the parameter and its device, instead of torch's
    error at the first step.

    The model must be on its training device when the wrapper is built:
    MMEngine's Runner moves it there in ``__init__`` (``wrap_model``) and
    builds the optimizer wrapper in ``train()``.

    Args:
        optim_wrapper_cfg (dict): As for
            :class:`DefaultOptimWrapperConstructor`.
        paramwise_cfg (dict, optional): As for
            :class:`DefaultOptimWrapperConstructor`.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        module = unwrap_model(model)
        optimizer_cfg = self.optimizer_cfg
        optimizer_cls = optimizer_cfg['type']
        if isinstance(optimizer_cls, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_cls = registry.get(optimizer_cfg['type'])
        params = list(module.named_parameters())
        chosen, what, why = self._choose(optimizer_cls, optimizer_cfg, params)
        print_log(
            f'{self.__class__.__name__}: {optimizer_cls.__name__} with '
            f'{what} ({why})', logger='current')
        if not chosen:
            return super().__call__(model)
        self.optimizer_cfg = dict(optimizer_cfg, **chosen)
        try:
            return super().__call__(model)
        finally:
            self.optimizer_cfg = optimizer_cfg

    @staticmethod
    def _choose(optimizer_cls: type, optimizer_cfg: dict,
                params: Params) -> Tuple[dict, str, str]:
        """``(chosen, what, why)``: ``chosen`` is ``{'fused': True}``,
        ``{'foreach': True}`` or ``{}`` (the config as it is); ``what`` and
        ``why`` say what runs and why, for the log.

        Raises:
            ValueError: ``fused=True`` in the config, and a parameter the
                optimizer's fused kernel does not take.
        """
        name = optimizer_cls.__name__
        devices = sorted({p.device.type for _, p in params})
        if optimizer_cfg.get('fused'):
            supported = fused_devices(optimizer_cls)
            bad = _unsupported(params, supported)
            if bad is not None:
                raise ValueError(
                    f'optim_wrapper.optimizer.fused=True: {name} has no '
                    f'fused kernel for parameter {bad[0]!r} '
                    f'({bad[1].dtype} on device {bad[1].device.type!r}); '
                    'fused needs floating-point parameters on '
                    f'{list(supported) or "no device"}. Set '
                    'optim_wrapper.optimizer.fused=False (or remove it).')
        for key in ('fused', 'foreach'):
            if key in optimizer_cfg:
                return ({}, f'{key}={optimizer_cfg[key]}',
                        f'optim_wrapper.optimizer.{key} set in the config')
        default = 'its default implementation'
        if not _accepts(optimizer_cls, 'fused'):
            return {}, default, f'{name} takes no fused argument'
        if not params:
            return {}, default, 'the model has no parameters'
        bad = _unsupported(params, fused_devices(optimizer_cls))
        if bad is None:
            return (dict(fused=True), 'fused=True',
                    f'all parameters float, on {devices}')
        why = (f'parameter {bad[0]!r} is {bad[1].dtype} on '
               f'{bad[1].device.type!r}, no fused kernel')
        if _accepts(optimizer_cls, 'foreach'):
            if _unsupported(params, _get_foreach_kernels_supported_devices(),
                            floating=False) is None:
                return dict(foreach=True), 'foreach=True', why
            why += '; no foreach kernels on ' + ', '.join(devices)
        return {}, default, why

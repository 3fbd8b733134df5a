# Copyright (c) mmekd contributors. All rights reserved.
"""Crash- and NaN-safe replacements for MMEngine's default components."""
from typing import Optional

from mmengine.config import Config

# MMEngine type -> mmekd subclass with the same arguments and behaviour,
# plus the safety the subclass documents.
_CHECKPOINT_HOOKS = ('CheckpointHook', 'mmengine.CheckpointHook')
_OPTIM_WRAPPERS = ('OptimWrapper', 'mmengine.OptimWrapper')


def apply_safe_training_defaults(cfg: Config,
                                 on_nonfinite: Optional[str] = None) -> None:
    """Use mmekd's safe subclasses where ``cfg`` asks for MMEngine's plain
    ones (in place).

    - ``default_hooks.checkpoint`` of type ``CheckpointHook`` becomes
      :class:`mmekd.AtomicCheckpointHook` (atomic writes; same arguments);
    - ``optim_wrapper`` of type ``OptimWrapper`` (or without a type)
      becomes :class:`mmekd.SafeOptimWrapper` (non-finite losses stop
      training, or are skipped);
    - ``on_nonfinite`` (``'stop'``/``'skip'``), if given, is set on it.

    Other types (e.g. ``AmpOptimWrapper``, whose loss scaler already skips
    steps with inf/NaN gradients) are left as configured.
    """
    hooks = cfg.get('default_hooks') or {}
    ckpt = hooks.get('checkpoint')
    if ckpt is not None and ckpt.get('type') in _CHECKPOINT_HOOKS:
        ckpt['type'] = 'mmekd.AtomicCheckpointHook'
    optim = cfg.get('optim_wrapper')
    if optim is None:
        if on_nonfinite is not None:
            raise SystemExit('--on-nonfinite: the config has no '
                             'optim_wrapper')
        return
    if optim.get('type', 'OptimWrapper') in _OPTIM_WRAPPERS:
        optim['type'] = 'mmekd.SafeOptimWrapper'
    if on_nonfinite is not None:
        if optim['type'] not in ('mmekd.SafeOptimWrapper',
                                 'SafeOptimWrapper'):
            raise SystemExit(
                f'--on-nonfinite needs mmekd.SafeOptimWrapper; the config '
                f"uses optim_wrapper.type={optim['type']!r}")
        optim['on_nonfinite'] = on_nonfinite

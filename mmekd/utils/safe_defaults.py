# Copyright (c) mmekd contributors. All rights reserved.
"""``--on-nonfinite``: what a NaN/inf loss does, on the config's wrapper."""
from typing import Optional

from mmengine.config import Config

_PLAIN_WRAPPERS = ('OptimWrapper', 'mmengine.OptimWrapper')
_SAFE_WRAPPERS = ('mmekd.SafeOptimWrapper', 'SafeOptimWrapper',
                  'mmekd.SafeAmpOptimWrapper', 'SafeAmpOptimWrapper')


def apply_safe_training_defaults(cfg: Config,
                                 on_nonfinite: Optional[str] = None) -> None:
    """Set ``optim_wrapper.on_nonfinite`` (``'stop'``/``'skip'``) in place.

    The config says what runs: mmekd's ``_base_`` configs use
    :class:`mmekd.SafeOptimWrapper` and :class:`mmekd.AtomicCheckpointHook`
    themselves, and nothing is swapped behind a config's back. Only when
    ``on_nonfinite`` is asked for and the config has MMEngine's plain
    ``OptimWrapper`` (which cannot honour it) is the wrapper made a
    ``SafeOptimWrapper`` with the same arguments, and that is printed.

    Raises:
        SystemExit: ``on_nonfinite`` is given but the config has no
            optimizer wrapper, or another type (e.g. ``AmpOptimWrapper``).
    """
    if on_nonfinite is None:
        return
    optim = cfg.get('optim_wrapper')
    if optim is None:
        raise SystemExit('--on-nonfinite: the config has no optim_wrapper')
    kind = optim.get('type', 'OptimWrapper')
    if kind in _PLAIN_WRAPPERS:
        optim['type'] = 'mmekd.SafeOptimWrapper'
        print(f'--on-nonfinite {on_nonfinite}: optim_wrapper.type {kind} -> '
              'mmekd.SafeOptimWrapper (same arguments)', flush=True)
    elif kind not in _SAFE_WRAPPERS:
        raise SystemExit(
            f'--on-nonfinite needs mmekd.SafeOptimWrapper (or '
            f'SafeAmpOptimWrapper); the config '
            f'uses optim_wrapper.type={kind!r}')
    optim['on_nonfinite'] = on_nonfinite

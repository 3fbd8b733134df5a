# Copyright (c) mmekd contributors. All rights reserved.
"""Safety settings of a training config: ``--on-nonfinite`` on the
config's optimizer wrapper, and a refusal of MMEngine's plain
``CheckpointHook``."""
from typing import Optional

from mmengine.config import Config
from mmengine.hooks import CheckpointHook

from mmekd.registry import HOOKS

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


def check_checkpoint_hook(cfg: Config) -> None:
    """Refuse a config whose checkpoint hook is MMEngine's plain
    :class:`~mmengine.hooks.CheckpointHook`.

    MMEngine merges ``default_hooks.checkpoint = dict(type='CheckpointHook',
    ...)`` of a derived config by replacing the ``_base_`` runtime's
    ``mmekd.AtomicCheckpointHook``, so one copied line silently drops the
    crash safety (a kill or a full disk leaves a truncated checkpoint, a
    kill during the best save no best checkpoint). The config says what
    runs, so it is refused rather than rewritten: the remedy is to set only
    the hook's fields. ``AtomicCheckpointHook`` takes the same arguments and
    keeps MMEngine's writes for remote back-ends, so nothing needs the plain
    hook. A config without a ``checkpoint`` entry gets the plain hook from
    MMEngine and is refused too. Other types (subclasses, a hook of one's
    own) and ``None`` (no checkpoints) are the config's choice and pass.

    Raises:
        SystemExit: The checkpoint hook would be the plain one.
    """
    hooks = cfg.get('default_hooks') or {}
    if 'checkpoint' not in hooks:  # MMEngine adds CheckpointHook(interval=1)
        raise SystemExit(
            'default_hooks has no checkpoint entry, so MMEngine adds its '
            'plain CheckpointHook, which writes checkpoints in place (a kill '
            'or a full disk leaves a truncated file): inherit mmekd\'s '
            "_base_ runtime, or set checkpoint=dict(type='mmekd."
            "AtomicCheckpointHook', interval=1) (or None: no checkpoints)")
    hook = hooks['checkpoint']
    if hook is None:
        return
    kind = hook.get('type', 'CheckpointHook')  # MMEngine's default type
    # mmekd's registry finds mmpretrain's and MMEngine's hooks too.
    cls = HOOKS.get(kind) if isinstance(kind, str) else kind
    if cls is CheckpointHook:
        raise SystemExit(
            f'default_hooks.checkpoint.type={kind!r} is MMEngine\'s plain '
            'CheckpointHook, which writes checkpoints in place (a kill or a '
            'full disk leaves a truncated file): set only the hook\'s fields '
            'and keep the _base_ runtime\'s mmekd.AtomicCheckpointHook (same '
            "arguments), or write type='mmekd.AtomicCheckpointHook'")

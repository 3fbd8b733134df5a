# Copyright (c) mmekd contributors. All rights reserved.
"""Every shipped config keeps the crash-safe hooks of the _base_ runtime:
atomic checkpoints, and a checkpoint on SIGTERM."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmekd.engine  # noqa: F401  (registers the hooks)
from mmekd.engine.hooks import AtomicCheckpointHook, PreemptionCheckpointHook
from mmekd.registry import HOOKS
from mmekd.utils import check_checkpoint_hook

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p) + [
                             osp.join(ROOT, 'configs', '_base_',
                                      'default_runtime.py')
                         ]


def hook_class(cfg: Config, key: str) -> type:
    """The class ``default_hooks[key]`` builds (its type looked up in the
    config's default scope, as the runner does)."""
    kind = cfg.default_hooks[key]['type']
    if isinstance(kind, type):
        return kind
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmpretrain')):
        return HOOKS.get(kind)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_checkpoint_hook_is_atomic(path):
    cfg = Config.fromfile(path)
    # Checkpoints are written (no config turns them off) ...
    assert cfg.default_hooks.get('checkpoint') is not None
    # ... by the hook that never leaves a truncated file.
    assert issubclass(hook_class(cfg, 'checkpoint'), AtomicCheckpointHook)
    # SIGTERM (Slurm pre-emption) saves the iteration instead of losing it.
    assert issubclass(hook_class(cfg, 'preemption'), PreemptionCheckpointHook)


@pytest.mark.parametrize('hooks, message', [
    (dict(checkpoint=dict(type='CheckpointHook', interval=2)),
     "type='CheckpointHook' is MMEngine's plain"),
    (dict(checkpoint=dict(interval=2)),  # no type: MMEngine's default
     "type='CheckpointHook' is MMEngine's plain"),
    (dict(logger=dict(interval=1)), 'default_hooks has no checkpoint entry'),
    (dict(checkpoint=dict(type='mmekd.AtomicCheckpointHook')), None),
    (dict(checkpoint=None), None),  # no checkpoints: nothing to lose
])
def test_plain_checkpoint_hook_is_refused(hooks, message):
    cfg = Config(dict(default_hooks=hooks))
    if message is None:
        check_checkpoint_hook(cfg)
    else:
        with pytest.raises(SystemExit, match=message):
            check_checkpoint_hook(cfg)

# Copyright (c) mmekd contributors. All rights reserved.
"""Command-line flags -> config, shared by tools/train.py and tools/test.py."""
from copy import deepcopy

import torch
from mmengine.config import Config, ConfigDict


def apply_dataloader_defaults(cfg: Config,
                              no_pin_memory: bool = False,
                              no_persistent_workers: bool = False) -> None:
    """MMPretrain's dataloader defaults (pinned memory, persistent workers,
    ``default_collate``) for every dataloader of ``cfg``, in place.

    Persistent workers need worker processes, so a loader with
    ``num_workers=0`` gets ``persistent_workers=False`` instead of the
    ``ValueError`` PyTorch would raise; pinned memory is off without CUDA.
    """
    defaults = ConfigDict(
        pin_memory=torch.cuda.is_available(),
        persistent_workers=True,
        collate_fn=dict(type='default_collate'),
    )
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(field) is None:
            continue
        loader = deepcopy(defaults)
        loader.update(cfg[field])
        if no_pin_memory:
            loader['pin_memory'] = False
        if no_persistent_workers or loader.get('num_workers', 0) == 0:
            loader['persistent_workers'] = False
        cfg[field] = loader


def enable_amp(cfg: Config) -> None:
    """Switch the optimizer wrapper to mixed precision (needs a GPU)."""
    if not torch.cuda.is_available():
        raise SystemExit('--amp needs a CUDA GPU (MMEngine\'s '
                         'AmpOptimWrapper does not run on CPU)')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def check_amp_device(cfg: Config) -> None:
    """A config whose optimizer wrapper is MMEngine's ``AmpOptimWrapper``
    (set in the config or by ``--cfg-options``) needs a CUDA GPU: say so up
    front instead of MMEngine's assertion deep in the optimizer build."""
    wrapper = cfg.get('optim_wrapper') or {}
    if (wrapper.get('type') == 'AmpOptimWrapper'
            and not torch.cuda.is_available()):
        raise SystemExit(
            'optim_wrapper.type=AmpOptimWrapper (mixed precision) '
            'needs a CUDA GPU; MMEngine\'s AmpOptimWrapper does not run on '
            'CPU. Train on a GPU, or configure a float32 OptimWrapper')

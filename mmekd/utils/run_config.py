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


# --amp: the wrapper type a float32 wrapper becomes.
_AMP_OF = {
    'OptimWrapper': 'mmekd.SafeAmpOptimWrapper',
    'mmengine.OptimWrapper': 'mmekd.SafeAmpOptimWrapper',
    'SafeOptimWrapper': 'mmekd.SafeAmpOptimWrapper',
    'mmekd.SafeOptimWrapper': 'mmekd.SafeAmpOptimWrapper',
}
_AMP_WRAPPERS = ('AmpOptimWrapper', 'mmengine.AmpOptimWrapper',
                 'SafeAmpOptimWrapper', 'mmekd.SafeAmpOptimWrapper')


def enable_amp(cfg: Config) -> None:
    """``--amp``: mixed precision with the config's non-finite check kept.

    ``OptimWrapper`` / ``mmekd.SafeOptimWrapper`` become
    ``mmekd.SafeAmpOptimWrapper`` with the same arguments (on a GPU
    MMEngine's ``AmpOptimWrapper`` with ``loss_scale='dynamic'``; on the
    CPU bfloat16 autocast), which is printed. Mixed-precision wrappers are
    kept.

    Raises:
        SystemExit: The config has another wrapper type.
    """
    optim = cfg.get('optim_wrapper')
    if optim is None:
        raise SystemExit('--amp: the config has no optim_wrapper')
    kind = optim.get('type', 'OptimWrapper')
    if kind in _AMP_WRAPPERS:
        return
    if kind not in _AMP_OF:
        raise SystemExit(f'--amp turns OptimWrapper or mmekd.SafeOptimWrapper '
                         f'into mmekd.SafeAmpOptimWrapper; the config uses '
                         f'optim_wrapper.type={kind!r}')
    optim['type'] = _AMP_OF[kind]
    optim.setdefault('loss_scale', 'dynamic')
    optim.pop('check', None)  # the loss scaler's wrapper checks on the host
    print(f'--amp: optim_wrapper.type {kind} -> {optim["type"]} (same '
          'arguments, mixed precision)', flush=True)


def check_amp_device(cfg: Config) -> None:
    """A config whose optimizer wrapper is MMEngine's ``AmpOptimWrapper``
    (set in the config or by ``--cfg-options``) needs an accelerator: say
    so up front instead of MMEngine's assertion deep in the optimizer
    build."""
    wrapper = cfg.get('optim_wrapper') or {}
    if (wrapper.get('type') in ('AmpOptimWrapper', 'mmengine.AmpOptimWrapper')
            and not torch.cuda.is_available()):
        raise SystemExit(
            'optim_wrapper.type=AmpOptimWrapper (mixed precision) '
            'needs a CUDA GPU; MMEngine\'s AmpOptimWrapper does not run on '
            'CPU. Use mmekd.SafeAmpOptimWrapper (bfloat16 on the CPU), or '
            'a float32 OptimWrapper')

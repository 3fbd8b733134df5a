# Copyright (c) mmekd contributors. All rights reserved.
"""Resume epoch-based training exactly where a checkpoint left it."""
import random
from itertools import islice
from typing import Iterator, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import BatchSampler, Sampler

from mmekd.registry import HOOKS


def get_rng_state() -> dict:
    """The states of Python's, NumPy's and PyTorch's global generators."""
    state = dict(
        python=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


class _ResumedEpochSampler(Sampler):
    """The sampler of the interrupted epoch, less its consumed indices.

    ``__iter__`` runs when the first batch of the epoch is fetched (after the
    data loader drew its base seed), which is where the generators were
    when the checkpoint was written: the saved states are restored there.
    """

    def __init__(self, sampler: Sampler, skip: int,
                 rng_state: Optional[dict]):
        self.sampler = sampler
        self.skip = skip
        self.rng_state = rng_state

    def __iter__(self) -> Iterator[int]:
        if self.rng_state is not None:
            set_rng_state(self.rng_state)
            self.rng_state = None
        return islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Make a resumed epoch-based run continue as if never interrupted.

    MMEngine 0.10.7 restores the iteration counter, weights, optimizer and
    schedulers, but its :class:`EpochBasedTrainLoop` starts the resumed
    epoch from its first batch again: after a mid-epoch checkpoint
    (``CheckpointHook(by_epoch=False, interval=k)``) the batches already
    trained on are trained on twice, the run is longer than ``max_iters``
    and the global random generators (data augmentation) are re-seeded, not
    restored. This hook

    - saves the Python/NumPy/PyTorch generator states in every checkpoint
      (``checkpoint['rng_state']``) and restores them on resume;
    - on resuming mid-epoch, skips the indices of the consumed batches in
      the resumed epoch (the sampler's order is reproduced: mmengine's
      ``DefaultSampler`` shuffles with ``seed + epoch``).

    Resume is then exact (same final weights) for single-process training
    with ``num_workers=0`` and a deterministic model. With worker processes
    the data order is still exact, but the workers' augmentation streams
    restart at the resumed epoch; in DDP every rank gets rank 0's generator
    states. Iteration-based loops are left alone (MMEngine's
    ``IterBasedTrainLoop`` already advances its data loader). Only the
    default :class:`torch.utils.data.BatchSampler` can be fast-forwarded;
    with another batch sampler the hook warns and the epoch restarts as in
    MMEngine.

    Logged ``batch_idx`` of the resumed epoch counts from the resume point.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._rng_state: Optional[dict] = None
        self._resumed = False
        self._original_sampler = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Called for load_from too; only a resume (train loop restored
        # from meta) uses the states, in before_train_epoch.
        self._rng_state = checkpoint.get('rng_state')
        self._resumed = bool(runner._resume)

    def before_train_epoch(self, runner) -> None:
        if not self._resumed:
            return
        self._resumed = False  # only the first epoch after resuming
        loop = runner.train_loop
        if not isinstance(loop, EpochBasedTrainLoop):
            return
        rng_state, self._rng_state = self._rng_state, None
        skip_batches = runner.iter - runner.epoch * len(loop.dataloader)
        if skip_batches <= 0:
            # Checkpoint at an epoch boundary: the generators resume before
            # the data loader of the next epoch is created, as they did.
            if rng_state is not None:
                set_rng_state(rng_state)
            return
        batch_sampler = loop.dataloader.batch_sampler
        if type(batch_sampler) is not BatchSampler:
            print_log(
                f'ExactResumeHook cannot fast-forward a '
                f'{type(batch_sampler).__name__}; epoch {runner.epoch + 1} '
                f'restarts from its first batch ({skip_batches} batches are '
                'trained on again)',
                logger='current',
                level=30)
            return
        self._original_sampler = batch_sampler.sampler
        batch_sampler.sampler = _ResumedEpochSampler(
            batch_sampler.sampler, skip_batches * batch_sampler.batch_size,
            rng_state)
        print_log(
            f'Resuming epoch {runner.epoch + 1} at batch {skip_batches + 1}: '
            f'the first {skip_batches} batches were trained on before the '
            'checkpoint',
            logger='current')

    def after_train_epoch(self, runner) -> None:
        if self._original_sampler is not None:
            runner.train_loop.dataloader.batch_sampler.sampler = \
                self._original_sampler
            self._original_sampler = None

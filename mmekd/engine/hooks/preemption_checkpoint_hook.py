# Copyright (c) mmekd contributors. All rights reserved.
"""Save a checkpoint and stop when the job is told to end (SIGTERM)."""
import os.path as osp
import signal
import threading
from typing import Dict, Optional, Sequence

import torch
from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log

from mmekd.registry import HOOKS
from mmekd.utils.atomic_save import atomic_write
from .atomic_checkpoint_hook import save_checkpoint_atomically

# Signals a process cannot catch.
_UNCATCHABLE = ('SIGKILL', 'SIGSTOP')


class TrainingPreempted(SystemExit):
    """Training stopped on a signal, after its checkpoint was written.

    A :class:`SystemExit` whose code is ``128 + signal number`` (143 for
    SIGTERM): uncaught, the process ends without a traceback and with the
    status a shell reports for a process ended by that signal, so a job
    script or scheduler sees that training did not finish.
    """


@HOOKS.register_module()
class PreemptionCheckpointHook(Hook):
    """On SIGTERM, finish the iteration, save an iteration checkpoint, stop.

    Slurm (pre-emption, ``scancel``, the time limit), Kubernetes and
    ``torchrun``'s agent send SIGTERM some time before they kill a job, and
    Python's default is to die at once, losing the work since the last
    checkpoint. With this hook the signal only sets a flag; at the end of
    the training iteration in progress the hook

    1. writes ``iter_<N>.pth`` (``N`` iterations done) into the checkpoint
       hook's folder (else the work directory) like
       :class:`AtomicCheckpointHook`: temp file + rename, refused for a
       model with NaN/inf values;
    2. points ``work_dir/last_checkpoint`` at it, so ``--resume`` finds it;
    3. logs the file and the iteration, and raises
       :class:`TrainingPreempted` (exit status 143 for SIGTERM).

    With :class:`ExactResumeHook` (the default runtime has both), a resumed
    run continues bit-identically, mid-epoch included. The hook runs last
    (``LOWEST``), after the schedulers, EMA and the checkpoint hook have
    finished the iteration. A second signal while the iteration finishes
    acts as it would without the hook (SIGTERM: ends the process at once).
    In distributed training all ranks must stop after the same iteration, so
    they agree on the flag with one all-reduce per iteration (a host sync;
    none in single-process runs). The signal handlers are installed in
    ``before_train`` (main thread only) and removed in ``after_run``; when
    training ended with an exception instead, the next signal finds the
    train loop gone and is handled as without the hook.

    Args:
        signals (Sequence[str]): Names of the signals to act on. Defaults to
            ``('SIGTERM', )``. Add e.g. ``'SIGUSR1'`` for Slurm's
            ``--signal=USR1@120``.
    """

    priority = 'LOWEST'

    def __init__(self, signals: Sequence[str] = ('SIGTERM', )) -> None:
        if isinstance(signals, str) or not signals:
            raise ValueError(
                f'signals must be a non-empty list of signal names such as '
                f"['SIGTERM'], got {signals!r}")
        catchable = sorted(s.name for s in signal.Signals
                           if s.name not in _UNCATCHABLE)
        for name in signals:
            if name not in catchable:
                raise ValueError(
                    f'signals: {name!r} is not a signal this process can '
                    f'catch; one of {catchable}')
        self.signals = tuple(signals)
        self._received: Optional[int] = None
        self._previous: Dict[int, object] = {}
        self._run_code = None  # the train loop's ``run``, while it runs

    def _training(self, frame) -> bool:
        """Whether the interrupted code is inside the train loop's ``run``
        (not after a run that ended with an exception, which skips
        ``after_run``)."""
        while frame is not None:
            if frame.f_code is self._run_code:
                return True
            frame = frame.f_back
        return False

    def _handle(self, signum: int, frame) -> None:
        if frame is not None and not self._training(frame):
            # Left installed by a run that failed: act as without the hook.
            self._restore()
            signal.raise_signal(signum)
            return
        self._received = signum
        self._restore()  # a second signal acts as without the hook
        print_log(
            f'{signal.Signals(signum).name} received: stopping after this '
            'training iteration, with a checkpoint', logger='current',
            level=30)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def before_train(self, runner) -> None:
        if threading.current_thread() is not threading.main_thread():
            print_log(
                'PreemptionCheckpointHook: training runs outside the main '
                f'thread, where {list(self.signals)} cannot be caught: no '
                'checkpoint will be saved on them', logger='current',
                level=30)
            return
        self._run_code = type(runner.train_loop).run.__code__
        for name in self.signals:
            signum = getattr(signal, name)
            self._previous[signum] = signal.signal(signum, self._handle)

    def _agreed_signal(self) -> int:
        """The signal received (0: none), by any rank in distributed runs."""
        received = self._received or 0
        if get_world_size() > 1:
            flag = torch.tensor([received])
            all_reduce(flag, op='max')
            received = int(flag.item())
        return received

    def _out_dir(self, runner) -> str:
        """The checkpoint hook's folder if it is local, else the work
        directory."""
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and isinstance(
                    hook.file_backend, LocalBackend):
                return hook.out_dir
        return runner.work_dir

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        signum = self._agreed_signal()
        if not signum:
            return
        self._restore()
        done = runner.iter + 1
        out_dir = self._out_dir(runner)
        filename = f'iter_{done}.pth'
        path = osp.join(out_dir, filename)
        save_checkpoint_atomically(
            runner, out_dir, filename, by_epoch=False,
            meta=dict(epoch=runner.epoch, iter=done))
        if is_main_process():
            atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), path)
        name = signal.Signals(signum).name
        runner.logger.warning(
            f'{name}: saved {path} after iteration {done} (epoch '
            f'{runner.epoch + 1}); training stops here. Continue with '
            '--resume.')
        raise TrainingPreempted(128 + signum)

    def after_run(self, runner) -> None:
        self._restore()
        if self._received is not None:
            print_log(
                f'{signal.Signals(self._received).name} received after the '
                'last training iteration: training completed',
                logger='current')

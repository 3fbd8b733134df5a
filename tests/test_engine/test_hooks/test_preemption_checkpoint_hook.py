# Copyright (c) mmekd contributors. All rights reserved.
"""PreemptionCheckpointHook in a runner: a real SIGTERM to this process (in
a child interpreter: without the hook, the signal ends it)."""
import os
import os.path as osp
import signal
import sys
import time

import pytest
from mmengine.hooks import Hook

from mmekd.engine.hooks import PreemptionCheckpointHook, TrainingPreempted
from mmekd.utils import safe_load

sys.path.insert(0, osp.join(osp.dirname(__file__), '..'))
from test_atomic_checkpoint_hook import Crash, _last, _runner  # noqa: E402


class SendSignal(Hook):
    """SIGTERM to this process at the end of iteration ``at`` (0-based), or
    after training when ``at`` is None."""

    def __init__(self, at=None):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter == self.at:
            os.kill(os.getpid(), signal.SIGTERM)

    def after_train(self, runner):
        if self.at is None:
            os.kill(os.getpid(), signal.SIGTERM)


def _preemptible_runner(work_dir, at):
    # 6 iterations, checkpoints every 2 (max 1 kept).
    runner = _runner(work_dir, 'mmekd.AtomicCheckpointHook')
    runner.register_hook(PreemptionCheckpointHook())
    runner.register_hook(SendSignal(at))
    return runner


@pytest.mark.slow  # a child interpreter
@pytest.mark.isolated
def test_sigterm_saves_after_the_iteration_and_stops(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    runner = _preemptible_runner(tmp_path, at=2)
    with pytest.raises(TrainingPreempted) as e:
        runner.train()
    assert e.value.code == 143  # 128 + SIGTERM, as a shell reports a kill
    path = str(tmp_path / 'iter_3.pth')  # the signal came in iteration 3
    assert _last(tmp_path) == path
    assert safe_load(path)['meta']['iter'] == 3
    assert sorted(f for f in os.listdir(tmp_path) if '.pth' in f) == [
        'iter_2.pth', 'iter_3.pth'
    ]
    assert signal.getsignal(signal.SIGTERM) == before  # handler removed

    # It resumes from there to the end.
    runner = _runner(tmp_path, 'mmekd.AtomicCheckpointHook')
    runner._resume, runner._load_from = True, None
    runner.train()
    assert runner.iter == 6


@pytest.mark.slow  # a child interpreter
@pytest.mark.isolated
def test_sigterm_after_the_last_iteration_lets_training_end(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    runner = _preemptible_runner(tmp_path, at=None)
    runner.train()
    assert runner.iter == 6
    assert _last(tmp_path) == str(tmp_path / 'iter_6.pth')
    assert signal.getsignal(signal.SIGTERM) == before


class Fail(Hook):

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        raise Crash


@pytest.mark.slow  # a child interpreter
@pytest.mark.isolated
def test_after_a_failed_run_sigterm_acts_as_without_the_hook(tmp_path):
    got = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    try:
        runner = _runner(tmp_path, 'mmekd.AtomicCheckpointHook')
        runner.register_hook(PreemptionCheckpointHook())
        runner.register_hook(Fail())
        with pytest.raises(Crash):  # after_run, which restores, never runs
            runner.train()
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # Python runs handlers between bytecodes
            if got:
                break
            time.sleep(0.01)
        assert got == [signal.SIGTERM]  # the handler from before the run
        assert not osp.exists(tmp_path / 'iter_1.pth')  # and nothing saved
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize('signals, message', [
    (['SIGKILL'], "'SIGKILL' is not a signal this process can catch"),
    (['SIGTERN'], "'SIGTERN' is not a signal this process can catch; one "
     r"of \[.*'SIGTERM'"),
    ([], 'signals must be a non-empty list'),
    ('SIGTERM', 'signals must be a non-empty list'),
])
def test_signals_are_checked(signals, message):
    with pytest.raises(ValueError, match=message):
        PreemptionCheckpointHook(signals=signals)

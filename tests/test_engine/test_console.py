# Copyright (c) mmekd contributors. All rights reserved.
"""What the console shows: set-up dumps go to the log file only, losses that
round to zero have no minus sign, short epochs log a few times."""
import logging
from types import SimpleNamespace

import pytest
from mmengine.hooks import LoggerHook
from mmengine.logging import MMLogger
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from mmekd.engine.hooks import ShortEpochLogIntervalHook
from mmekd.engine.runner import SetupToLogFileFilter


def record(msg):
    return logging.LogRecord('mmengine', logging.INFO, __file__, 1, msg,
                             None, None)


@pytest.mark.parametrize('msg, shown', [
    ('\n' + '-' * 60 + '\nSystem environment:\n    sys.platform: linux',
     False),
    ("Config:\nmodel = dict(type='mmekd.DDNNClassifier')", False),
    ('Hooks will be executed in the following order:\nbefore_run:', False),
    ('"FileClient" will be deprecated in future. Please use io functions',
     False),
    ('"HardDiskBackend" is the alias of "LocalBackend" and the former', False),
    ('Epoch(train) [1][5/23]  lr: 2.6e-02  eta: 0:00:12  loss: 6.9', True),
    ('Checkpoints will be saved to /tmp/w.', True),
    ('Config file written', True),
])
def test_filter_keeps_setup_dumps_off_the_console(msg, shown):
    assert SetupToLogFileFilter().filter(record(msg)) is shown


def test_filter_prints_zero_losses_without_sign():
    r = record('loss: 6.8433  loss_kl_sub0: -0.0000  loss_at_sub0: -0.0012  '
               'lr: 4.6818e-02  x: -0.00001  y: -0.0000')
    assert SetupToLogFileFilter().filter(r)
    assert r.getMessage() == ('loss: 6.8433  loss_kl_sub0: 0.0000  '
                              'loss_at_sub0: -0.0012  lr: 4.6818e-02  '
                              'x: -0.00001  y: 0.0000')


def fake_runner(iters, loop_cls=EpochBasedTrainLoop, interval=100):
    return SimpleNamespace(
        train_loop=object.__new__(loop_cls),
        train_dataloader=range(iters),
        hooks=[LoggerHook(interval=interval)],
        logger=MMLogger.get_instance('test_console'))


@pytest.mark.parametrize('iters, loop_cls, interval, expected', [
    (23, EpochBasedTrainLoop, 100, 5),    # the demo: 4 lines, not 1
    (352, EpochBasedTrainLoop, 100, 88),  # CIFAR-100, batch 128
    (5000, EpochBasedTrainLoop, 100, 100),  # long epochs: as configured
    (2, EpochBasedTrainLoop, 100, 1),
    (23, IterBasedTrainLoop, 100, 100),   # no epochs to fill
])
def test_short_epochs_log_a_few_times(iters, loop_cls, interval, expected):
    runner = fake_runner(iters, loop_cls, interval)
    ShortEpochLogIntervalHook(lines_per_epoch=4).before_train(runner)
    assert runner.hooks[0].interval == expected


def test_log_interval_hook_bad_argument():
    with pytest.raises(ValueError, match='lines_per_epoch must be a positive '
                       'int, got 0'):
        ShortEpochLogIntervalHook(lines_per_epoch=0)


def test_dataloader_worker_advice_shown_once():
    from mmekd.patches import show_dataloader_advice_once
    shown = []
    show = show_dataloader_advice_once(lambda m, *a, **k: shown.append(m))
    advice = UserWarning('This DataLoader will create 4 worker processes in '
                         'total. Our suggested max number of worker ... is 2')
    for _ in range(3):  # train, val and test loaders
        show(advice, UserWarning, 'dataloader.py', 431)
    show(UserWarning('something else'), UserWarning, 'x.py', 1)
    show(UserWarning('something else'), UserWarning, 'x.py', 1)
    assert [str(m) for m in shown] == [str(advice), 'something else',
                                       'something else']

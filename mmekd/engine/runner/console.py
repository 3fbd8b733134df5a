# Copyright (c) mmekd contributors. All rights reserved.
"""Keep MMEngine's set-up dumps in the log file and off the console.

Before the first iteration MMEngine's :class:`~mmengine.runner.Runner` logs
the system environment, the whole config and the order of every hook at
INFO (about 320 lines for the demo), plus deprecation notices of its own
file backends. They stay useful in ``work_dir/<timestamp>/<timestamp>.log``;
on the console they push the progress lines out of sight.
"""
import logging
import os.path as osp
import re

from mmengine.runner import Runner

# Starts of the messages kept off the console (the log file has them all).
_SETUP_MESSAGES = (
    'Config:\n',
    'Hooks will be executed in the following order',
    '"FileClient" will be deprecated',
    '"HardDiskBackend" is the alias of "LocalBackend"',
)


# The sign of a loss that rounds to zero (a KL divergence of -1e-9 is
# float error): "loss_kl_sub0: -0.0000" -> "loss_kl_sub0: 0.0000".
_NEGATIVE_ZERO = re.compile(r'(?<=: )-(?=0\.0+(?![0-9]))')


class SetupToLogFileFilter(logging.Filter):
    """A console-handler filter that drops MMEngine's set-up dumps and
    prints losses that round to zero without a minus sign."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.lstrip('\n-').startswith('System environment:'):
            return False
        if msg.startswith(_SETUP_MESSAGES):
            return False
        if isinstance(record.msg, str) and ': -0.0' in record.msg:
            record.msg = _NEGATIVE_ZERO.sub('', record.msg)
        return True


class SetupToLogFileRunner(Runner):
    """:class:`mmengine.runner.Runner` whose console skips the set-up dumps
    (environment, config, hook order) and says where they are instead.

    Everything else, the log file included, is MMEngine's.
    """

    def build_logger(self, *args, **kwargs):
        logger = super().build_logger(*args, **kwargs)
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler) and not any(
                        isinstance(f, SetupToLogFileFilter)
                        for f in handler.filters):
                handler.addFilter(SetupToLogFileFilter())
        return logger

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logger.info(
            'Environment, config and hooks: '
            f'{osp.join(self.log_dir, self.timestamp + ".log")}')

# Copyright (c) mmekd contributors. All rights reserved.
from mmengine.hooks import Hook, LoggerHook
from mmengine.runner import EpochBasedTrainLoop

from mmekd.registry import HOOKS
from mmekd.utils.numbers import config_int


@HOOKS.register_module()
class ShortEpochLogIntervalHook(Hook):
    """Log progress a few times in every epoch, however short it is.

    MMEngine's ``LoggerHook`` logs every ``interval`` iterations (100 in the
    default runtime): an epoch of 23 iterations then shows a single line.
    Before training (epoch-based loops only), this hook lowers the
    interval to ``len(train_dataloader) // lines_per_epoch`` when that is
    smaller, and logs the change. Longer epochs keep the configured interval.

    Args:
        lines_per_epoch (int): Progress lines wanted per epoch, ``>= 1``.
            Defaults to 4.
    """
    priority = 'LOW'

    def __init__(self, lines_per_epoch: int = 4):
        self.lines_per_epoch = config_int(lines_per_epoch,
                                          'lines_per_epoch', minimum=1)

    def before_train(self, runner) -> None:
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            return
        iters = len(runner.train_dataloader)
        interval = max(1, iters // self.lines_per_epoch)
        for hook in runner.hooks:
            if isinstance(hook, LoggerHook) and interval < hook.interval:
                runner.logger.info(
                    f'Logging every {interval} iterations (configured: '
                    f'{hook.interval}): {self.lines_per_epoch} lines in an '
                    f'epoch of {iters} iterations')
                hook.interval = interval

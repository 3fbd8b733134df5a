# Copyright (c) mmekd contributors. All rights reserved.
"""A RuntimeInfoHook that reads the logged losses only when they are used."""
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.hooks import LoggerHook, RuntimeInfoHook
from mmengine.hooks.runtime_info_hook import DATA_BATCH
from mmengine.optim import OptimWrapperDict
from mmengine.utils import apply_to

from mmekd.registry import HOOKS
from mmekd.utils.numbers import config_int
from ..optim.safe_optim_wrapper import NonFiniteReporter


def read_scalars(values: Sequence[Any]) -> List[Any]:
    """``values`` with every tensor replaced by its Python number, as
    ``tensor.item()`` gives it, reading all tensors of a device at once
    (one ``torch.stack(...).tolist()``; floating-point tensors of any dtype
    are read together as float64, which holds them exactly). Other values
    are returned as they are.

    Args:
        values (Sequence): Tensors of one element each, and other values.

    Returns:
        list: The values, tensors read.
    """
    out = list(values)
    groups: Dict[Tuple, List[int]] = defaultdict(list)
    for i, value in enumerate(out):
        if isinstance(value, torch.Tensor):
            kind = 'float' if value.is_floating_point() else value.dtype
            groups[(value.device, kind)].append(i)
    for (_, kind), indices in groups.items():
        stacked = torch.stack([out[i].detach().reshape(()) for i in indices])
        if kind == 'float' and stacked.device.type != 'mps':  # no float64
            stacked = stacked.to(torch.float64)
        for i, number in zip(indices, stacked.tolist()):
            out[i] = number
    return out


@HOOKS.register_module()
class DeferredRuntimeInfoHook(RuntimeInfoHook):
    """:class:`mmengine.hooks.RuntimeInfoHook` without a host sync in the
    training iterations on which nothing is logged.

    MMEngine's hook puts every iteration's ``log_vars`` into the message
    hub (``update_scalar``, which calls ``.item()`` on each loss term: on a
    GPU one device sync per term and iteration). This hook keeps the
    detached tensors on the device instead and flushes all pending
    iterations into the message hub, in order, with one device read
    (:func:`read_scalars`), exactly when they are read:

    - before a :class:`~mmengine.hooks.LoggerHook` prints a training line
      (its own test: ``every_n_inner_iters(batch_idx, interval)``, or the
      end of the epoch unless ``ignore_last`` applies; the interval is
      read every iteration, so a hook that changes it is followed.
      ``log_metric_by_epoch`` only concerns validation metrics, which are
      not deferred; every pending value is flushed before validation);
    - at the end of every training epoch, before validation and after
      training;
    - in ``before_save_checkpoint``, where the checkpoint's
      ``message_hub`` (built by the runner before that hook) is refreshed,
      so checkpoints and resumes hold the same history as with MMEngine's
      hook;
    - when ``max_pending`` iterations are pending (no LoggerHook, or a very
      long interval), so the pending tensors stay few.

    The message hub ends up with the same ``HistoryBuffer`` contents as
    with MMEngine's hook. Non-tensor values go through ``update_scalar``
    unchanged (in their place in the order); a tensor of more than one
    element is refused at once, by ``update_scalar``, as MMEngine does.

    At every flush the hook also has the optim wrappers that check
    non-finite losses on the device (:class:`mmekd.SafeOptimWrapper` with
    ``check='device'``, a :class:`~mmekd.engine.optim.safe_optim_wrapper.
    NonFiniteReporter`) report what is pending, so a NaN stops
    (``'stop'``) or is counted (``'skip'``) at the next log line, with the
    iteration it happened at.

    Args:
        max_pending (int): Flush once this many iterations are pending.
            Defaults to 1000.
    """

    priority = 'VERY_HIGH'

    def __init__(self, max_pending: int = 1000):
        self.max_pending = config_int(max_pending, 'max_pending', minimum=1)
        self._pending: List[List[Tuple[str, Any]]] = []

    @staticmethod
    def _optim_wrappers(runner) -> list:
        wrapper = getattr(runner, 'optim_wrapper', None)
        if isinstance(wrapper, OptimWrapperDict):
            return list(wrapper.values())
        return [] if wrapper is None or isinstance(wrapper, dict) \
            else [wrapper]

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self._pending = []

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        """Keep ``outputs`` (``log_vars``) on the device; flush when a
        LoggerHook is about to print them.

        Args:
            runner (Runner): The runner of the training process.
            batch_idx (int): The index of the current batch in the train loop.
            data_batch (Sequence[dict], optional): Data from dataloader.
                Defaults to None.
            outputs (dict, optional): Outputs from model. Defaults to None.
        """
        if outputs is not None:
            values = []
            for key, value in outputs.items():
                if isinstance(value, torch.Tensor):
                    if value.numel() != 1:
                        # MMEngine's refusal, at the same iteration.
                        runner.message_hub.update_scalar(f'train/{key}',
                                                         value)
                    value = value.detach()
                values.append((f'train/{key}', value))
            self._pending.append(values)
        if self._logger_prints(runner, batch_idx) or \
                len(self._pending) >= self.max_pending:
            self.flush(runner)

    @staticmethod
    def _logger_prints(runner, batch_idx: int) -> bool:
        """Whether a LoggerHook prints a training line after this iteration
        (the conditions of ``LoggerHook.after_train_iter``)."""
        for hook in runner.hooks:
            if not isinstance(hook, LoggerHook):
                continue
            if hook.every_n_inner_iters(batch_idx, hook.interval):
                return True
            if hook.end_of_epoch(runner.train_dataloader, batch_idx) and (
                    not hook.ignore_last
                    or len(runner.train_dataloader) <= hook.interval):
                return True
        return False

    def flush(self, runner) -> None:
        """Put every pending iteration's values into the message hub, in
        order, with one device read; then let the optimizer wrappers report
        their non-finite checks made on the device.

        Args:
            runner (Runner): The runner of the training process.
        """
        pending, self._pending = self._pending, []
        if pending:
            flat = [item for values in pending for item in values]
            numbers = read_scalars([value for _, value in flat])
            for (key, _), number in zip(flat, numbers):
                runner.message_hub.update_scalar(key, number)
        for wrapper in self._optim_wrappers(runner):
            if isinstance(wrapper, NonFiniteReporter):
                wrapper.report_nonfinite()

    def after_train_epoch(self, runner) -> None:
        self.flush(runner)

    def before_val(self, runner) -> None:
        self.flush(runner)
        super().before_val(runner)

    def after_train(self, runner) -> None:
        try:
            self.flush(runner)
        finally:
            super().after_train(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Flush, then rebuild ``checkpoint['message_hub']`` as the runner
        did (before calling this hook), so that it holds the flushed
        values."""
        self.flush(runner)
        if 'message_hub' in checkpoint:
            checkpoint['message_hub'] = apply_to(
                runner.message_hub.state_dict(),
                lambda x: hasattr(x, 'cpu'), lambda x: x.cpu())

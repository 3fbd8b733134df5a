# Copyright (c) mmekd contributors. All rights reserved.
"""An optimizer wrapper that refuses (or skips) non-finite losses."""
from contextlib import contextmanager
from typing import Dict, List, Optional

import torch
import torch.distributed as torch_dist
import torch.nn as nn
from mmengine.logging import MessageHub, print_log
from mmengine.optim import OptimWrapper

from mmekd.registry import OPTIM_WRAPPERS

ON_NONFINITE = ('stop', 'skip')


class NonFiniteLossError(FloatingPointError):
    """The training loss is NaN or infinite."""


@OPTIM_WRAPPERS.register_module()
class SafeOptimWrapper(OptimWrapper):
    """:class:`OptimWrapper` that checks the loss before back-propagation.

    A NaN or infinite loss either stops training with
    :class:`NonFiniteLossError`, naming the iteration and every non-finite
    loss term (``on_nonfinite='stop'``), or drops the iteration: no
    backward, no optimizer step, no change to the weights or to the
    optimizer state (``on_nonfinite='skip'``). A skipped iteration leaves
    the model exactly as it was before it: its forward already updated the
    BatchNorm running statistics (with the non-finite batch), so every
    buffer is restored from a copy taken when the iteration's forward began.
    Skipped iterations are counted in :attr:`num_skipped`, logged, and
    training stops once more than ``max_skipped`` have been skipped, with a
    message naming the skipped iterations and their non-finite terms.

    The loss terms are read from the model's ``forward(mode='loss')`` output
    (a forward hook active only inside :meth:`optim_context`, i.e. in
    ``train_step``), so any MMEngine model works. In distributed training
    the decision is taken jointly (all-reduce of one flag), so all ranks
    skip together and DDP's gradient all-reduce stays matched.

    With gradient accumulation a skipped iteration contributes no gradient;
    the step at the end of the window uses the other iterations, and is left
    out if every iteration of the window was skipped.

    Args:
        optimizer (torch.optim.Optimizer): As for :class:`OptimWrapper`.
        on_nonfinite (str): ``'stop'`` (default) or ``'skip'``.
        max_skipped (int, optional): With ``'skip'``, stop once more than
            this many iterations were skipped in total. Defaults to 10;
            ``None``: no limit.
        **kwargs: Other arguments of :class:`OptimWrapper`
            (``accumulative_counts``, ``clip_grad``).
    """

    def __init__(self,
                 optimizer: torch.optim.Optimizer,
                 on_nonfinite: str = 'stop',
                 max_skipped: Optional[int] = 10,
                 **kwargs):
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f'on_nonfinite must be one of {ON_NONFINITE}, '
                             f'got {on_nonfinite!r}')
        if max_skipped is not None and (not isinstance(max_skipped, int)
                                        or max_skipped < 0):
            raise ValueError('max_skipped must be None or an int >= 0, got '
                             f'{max_skipped!r}')
        super().__init__(optimizer, **kwargs)
        self.on_nonfinite = on_nonfinite
        self.max_skipped = max_skipped
        self.num_skipped = 0
        self.skipped: List[str] = []  # where and why, one per skip
        self._buffers_before: Optional[List[tuple]] = None
        self._loss_terms: Optional[Dict[str, torch.Tensor]] = None
        self._window_has_grad = False

    def _record_loss_terms(self, module: nn.Module, args, output) -> None:
        if isinstance(output, dict):
            self._loss_terms = output

    @contextmanager
    def optim_context(self, model: nn.Module):
        """:meth:`OptimWrapper.optim_context`, recording the loss terms."""
        handle = model.register_forward_hook(self._record_loss_terms)
        if self.on_nonfinite == 'skip':
            # The forward updates BatchNorm statistics before the loss can
            # be checked: keep what a skip has to restore.
            self._buffers_before = [(b, b.detach().clone())
                                    for b in model.buffers()]
        try:
            with super().optim_context(model):
                yield
        finally:
            handle.remove()

    def _is_finite(self, loss: torch.Tensor) -> bool:
        bad = (~torch.isfinite(loss.detach())).any().to(torch.int32)
        if torch_dist.is_available() and torch_dist.is_initialized() \
                and torch_dist.get_world_size() > 1:
            # One rank's NaN poisons every rank's averaged gradients, and
            # ranks that skip backward must all skip it.
            torch_dist.all_reduce(bad, op=torch_dist.ReduceOp.MAX)
        return not bool(bad.item())

    def _describe(self, loss: torch.Tensor) -> str:
        info = MessageHub.get_current_instance().runtime_info
        where = (f'iteration {info["iter"] + 1}' if 'iter' in info else
                 'this iteration')
        if 'epoch' in info:
            where += f' (epoch {info["epoch"] + 1})'
        terms = self._loss_terms or {}
        bad = []
        for name, value in terms.items():
            if 'loss' not in name:
                continue  # MMEngine only sums keys containing 'loss'
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if isinstance(v, torch.Tensor) and \
                        not torch.isfinite(v.detach()).all():
                    bad.append(f'{name}={v.detach().float().mean().item()}')
                    break
        if not bad:
            bad = [f'loss={loss.detach().float().mean().item()}'
                   ' (local terms are finite: another rank diverged)'
                   if torch.isfinite(loss.detach()).all() else
                   f'loss={loss.detach().float().mean().item()}']
        return f'{where}: {", ".join(bad)}'

    def update_params(self,
                      loss: torch.Tensor,
                      step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        """Back-propagate and step, unless ``loss`` is not finite."""
        try:
            if self._is_finite(loss):
                self._window_has_grad = True
                super().update_params(loss, step_kwargs, zero_kwargs)
            else:
                self._handle_nonfinite(loss, zero_kwargs or {})
        finally:
            if self.should_update():
                self._window_has_grad = False
            self._loss_terms = None  # do not keep the graph alive
            self._buffers_before = None

    def _handle_nonfinite(self, loss: torch.Tensor, zero_kwargs: dict):
        self._stop_or_count_skip(self._describe(loss))
        # Count the iteration (keeps accumulation windows aligned) without
        # backward; step only with gradients of other iterations.
        self._inner_count += 1
        if self.should_update():
            if self._window_has_grad:
                self.step()
            self.zero_grad(**zero_kwargs)

    def _stop_or_count_skip(self, what: str) -> None:
        """Raise (``'stop'``, or too many skips) or log and count a skip."""
        if self.on_nonfinite == 'stop':
            raise NonFiniteLossError(
                f'Non-finite loss at {what}. Lower the learning rate, clip '
                'gradients (optim_wrapper.clip_grad=dict(max_norm=...)) or '
                "skip such iterations (optim_wrapper.on_nonfinite='skip')")
        self.num_skipped += 1
        self.skipped.append(what)
        self._restore_buffers()
        if self.max_skipped is not None and \
                self.num_skipped > self.max_skipped:
            shown = '; '.join(self.skipped[-5:])
            raise NonFiniteLossError(
                f'{self.num_skipped} iterations skipped for a non-finite '
                f'loss, more than max_skipped={self.max_skipped} (raise it '
                'in optim_wrapper, or lower the learning rate / clip '
                f'gradients). The last ones: {shown}')
        print_log(
            f'Non-finite loss at {what}; iteration skipped (no update), '
            f'{self.num_skipped} skipped so far',
            logger='current',
            level=30)
        MessageHub.get_current_instance().update_info(
            'nonfinite_skipped', self.num_skipped)

    def _restore_buffers(self) -> None:
        """Put every buffer (BatchNorm statistics and counters) back to its
        value before this iteration's forward."""
        if self._buffers_before is None:
            return
        with torch.no_grad():
            for buffer, before in self._buffers_before:
                buffer.copy_(before)
        self._buffers_before = None

    def check_backpropagated(self, loss: torch.Tensor,
                             loss_terms: Dict[str, torch.Tensor]) -> bool:
        """The check of :meth:`update_params` for a model that has already
        back-propagated its losses itself (several backward calls, e.g.
        :class:`mmekd.DDNNClassifier`'s memory-efficient ``train_step``),
        before it steps.

        Returns:
            bool: True if the gradients may be used. Otherwise raises
            (``'stop'``) or, for ``'skip'``, zeroes all gradients of the
            accumulation window (they contain this iteration's non-finite
            values) and returns False.
        """
        if self._is_finite(loss):
            self._window_has_grad = True
            self._buffers_before = None
            return True
        self._loss_terms = loss_terms
        try:
            self._stop_or_count_skip(self._describe(loss))
        finally:
            self._loss_terms = None
        self.zero_grad()
        self._window_has_grad = False
        return False

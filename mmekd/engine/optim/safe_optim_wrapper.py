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
from mmekd.utils.refusal import RefusalError

ON_NONFINITE = ('stop', 'skip')


class NonFiniteLossError(RefusalError, FloatingPointError):
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

    **Deferred check (no host sync per iteration).** The check above reads
    one flag on the host (``.item()``) every iteration: on a GPU that is a
    device sync. When :attr:`defer_check` is set (by
    :class:`mmekd.DeferredRuntimeInfoHook`, in ``before_train``) and the
    check can be done on the device — every param group of the optimizer
    is ``fused=True`` (torch's fused SGD/Adam/AdamW skip their update on
    the device when ``optimizer.found_inf`` is 1), ``accumulative_counts``
    is 1 and there is no ``clip_grad`` (it reads the gradient norm) — the
    flag stays on the device: it is all-reduced (MAX) across ranks, given
    to the optimizer as ``found_inf`` (the update is skipped on the
    device), every buffer is put back where it is set (``torch.where``,
    BatchNorm statistics), and the iteration is recorded as pending.
    :meth:`report_nonfinite` reads all pending flags with one sync and then
    stops or counts the skips exactly as the immediate check does; the hook
    calls it whenever it flushes the logged losses, so a non-finite loss
    is reported at the next log line, at most one logging interval late.
    With ``'stop'`` every step after the non-finite iteration is skipped
    as well (a sticky flag on the device), so the model is left as it was
    before that iteration when the error is raised. Momentum buffers of a
    fused SGD are created as zeros before their first step (a skipped
    first step would otherwise leave ``empty_like`` garbage in them); that
    equals torch's first step only for ``dampening=0``, so with dampening
    the first step of each parameter is checked on the host (once).
    Otherwise (not fused, accumulation, ``clip_grad``, plain use without
    the hook) the immediate check is used.

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
        # Deferred check (see the class docstring).
        self.defer_check = False
        self._deferring = False  # this iteration is checked on the device
        self._found_inf: Optional[torch.Tensor] = None  # for the next step
        self._stop_flag: Optional[torch.Tensor] = None  # 'stop': sticky
        self._pending: List[tuple] = []  # (where, flag, loss, loss terms)

    @property
    def can_defer(self) -> bool:
        """Whether the check may stay on the device (see the class
        docstring): :attr:`defer_check` is set, the optimizer is fused,
        ``accumulative_counts == 1`` and there is no ``clip_grad``."""
        groups = self.optimizer.param_groups
        return (self.defer_check and self._accumulative_counts == 1
                and not self.clip_grad_kwargs and bool(groups)
                and all(g.get('fused') for g in groups))

    def _record_loss_terms(self, module: nn.Module, args, output) -> None:
        if isinstance(output, dict):
            self._loss_terms = output

    @contextmanager
    def optim_context(self, model: nn.Module):
        """:meth:`OptimWrapper.optim_context`, recording the loss terms."""
        handle = model.register_forward_hook(self._record_loss_terms)
        self._deferring = self.can_defer
        if self.on_nonfinite == 'skip' or self._deferring:
            # The forward updates BatchNorm statistics before the loss can
            # be checked: keep what a skip has to restore (a deferred
            # 'stop' skips the step too, and reports later).
            self._buffers_before = [(b, b.detach().clone())
                                    for b in model.buffers()]
        try:
            with super().optim_context(model):
                yield
        finally:
            handle.remove()

    @staticmethod
    def _nonfinite_flag(loss: torch.Tensor) -> torch.Tensor:
        """A bool tensor on the loss's device: the loss is not finite here
        or on another rank (all-reduced with MAX; no host sync)."""
        bad = (~torch.isfinite(loss.detach())).any().to(torch.int32)
        if torch_dist.is_available() and torch_dist.is_initialized() \
                and torch_dist.get_world_size() > 1:
            # One rank's NaN poisons every rank's averaged gradients, and
            # ranks that skip backward must all skip it.
            torch_dist.all_reduce(bad, op=torch_dist.ReduceOp.MAX)
        return bad.bool()

    def _is_finite(self, loss: torch.Tensor) -> bool:
        return not bool(self._nonfinite_flag(loss).item())

    @staticmethod
    def _where() -> str:
        """``'iteration N (epoch E)'`` from the message hub."""
        info = MessageHub.get_current_instance().runtime_info
        where = (f'iteration {info["iter"] + 1}' if 'iter' in info else
                 'this iteration')
        if 'epoch' in info:
            where += f' (epoch {info["epoch"] + 1})'
        return where

    def _describe(self, loss: torch.Tensor,
                  terms: Optional[Dict] = None,
                  where: Optional[str] = None) -> str:
        if where is None:
            where = self._where()
        if terms is None:
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
        if self._deferring:
            try:
                skip = self._defer_check(loss, self._loss_terms)
                # Backward (non-finite gradients are never applied: the
                # fused step is skipped on the device), step, zero_grad.
                super().update_params(loss, step_kwargs, zero_kwargs)
                self._restore_buffers_where(skip)
            finally:
                self._end_deferred_iteration()
            return
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

    def _stop_or_count_skip(self, what: str, stop_note: str = '') -> None:
        """Raise (``'stop'``, or too many skips) or log and count a skip.
        ``stop_note`` ends the ``'stop'`` message."""
        if self.on_nonfinite == 'stop':
            raise NonFiniteLossError(
                f'Non-finite loss at {what}. Lower the learning rate, clip '
                'gradients (optim_wrapper.clip_grad=dict(max_norm=...)) or '
                "skip such iterations (optim_wrapper.on_nonfinite='skip')"
                + stop_note)
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

        In the deferred mode (see the class docstring) nothing is read on
        the host: the flag is handed to the next :meth:`step` (skipped on
        the device), the buffers are restored on the device, the check is
        reported by :meth:`report_nonfinite`, and True is returned.

        Returns:
            bool: True if the gradients may be used. Otherwise raises
            (``'stop'``) or, for ``'skip'``, zeroes all gradients of the
            accumulation window (they contain this iteration's non-finite
            values) and returns False.
        """
        if self._deferring:
            try:
                # Every backward is done: the buffers may be restored now.
                self._restore_buffers_where(
                    self._defer_check(loss, loss_terms))
            finally:
                self._deferring = False
                self._buffers_before = None
            # The caller steps (the step is skipped on the device if the
            # loss is not finite) and zeroes the gradients.
            self._window_has_grad = True
            return True
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

    # ------------------------------------------------------------------ #
    # deferred check
    # ------------------------------------------------------------------ #
    def _defer_check(self, loss: torch.Tensor,
                     loss_terms: Optional[Dict]) -> torch.Tensor:
        """Check ``loss`` on the device: the flag skips the next
        :meth:`step`; the iteration is recorded for
        :meth:`report_nonfinite`.

        Returns:
            Tensor: The flag of this iteration's skip (a bool on the
            device), for :meth:`_restore_buffers_where`.
        """
        bad = self._nonfinite_flag(loss)
        skip = bad
        if self.on_nonfinite == 'stop':
            # Training stops at the report: apply no step from here on, so
            # the model stays as it was before the non-finite iteration.
            if self._stop_flag is not None:
                skip = skip | self._stop_flag.to(skip.device)
            self._stop_flag = skip
        self._found_inf = skip.to(torch.float32)
        terms = {}
        for name, value in (loss_terms or {}).items():
            if isinstance(value, torch.Tensor):
                terms[name] = value.detach()
            elif isinstance(value, (list, tuple)):
                terms[name] = [v.detach() if isinstance(v, torch.Tensor)
                               else v for v in value]
        self._pending.append((self._where(), bad, loss.detach(), terms))
        return skip

    def _restore_buffers_where(self, skip: torch.Tensor) -> None:
        """:meth:`_restore_buffers` where the device flag ``skip`` is set
        (``torch.where``: no host sync). After the backward: BatchNorm's
        backward needs its running statistics unchanged."""
        if self._buffers_before is None:
            return
        with torch.no_grad():
            for buffer, before in self._buffers_before:
                buffer.copy_(torch.where(skip.to(buffer.device), before,
                                         buffer))
        self._buffers_before = None

    def _end_deferred_iteration(self) -> None:
        self._deferring = False
        self._found_inf = None
        self._loss_terms = None  # do not keep the graph alive
        self._buffers_before = None

    def step(self, **kwargs) -> None:
        """:meth:`OptimWrapper.step`; after a deferred check, the fused
        optimizer gets the check's flag as ``found_inf`` (1: the update is
        skipped on the device)."""
        found_inf, self._found_inf = self._found_inf, None
        if found_inf is None:
            super().step(**kwargs)
            return
        if not self._prepare_momentum_buffers(found_inf):
            return
        self.optimizer.found_inf = found_inf
        try:
            super().step(**kwargs)
        finally:
            del self.optimizer.found_inf

    def _prepare_momentum_buffers(self, found_inf: torch.Tensor) -> bool:
        """Create the missing momentum buffers of a fused SGD as zeros, so
        a skipped first step leaves no uninitialised (``empty_like``)
        buffer. With ``dampening=0`` a zero buffer's first update gives
        the gradient, exactly torch's first step. With dampening it would
        not: then the flag is read on the host (the first step only) and
        the step is left out when it is set.

        Returns:
            bool: whether to step (with ``found_inf``).
        """
        if not isinstance(self.optimizer, torch.optim.SGD):
            return True
        for group in self.optimizer.param_groups:
            if group['momentum'] == 0:
                continue
            missing = [
                p for p in group['params'] if p.grad is not None
                and self.optimizer.state[p].get('momentum_buffer') is None
            ]
            if not missing:
                continue
            if group['dampening'] != 0:
                if bool(found_inf.item()):
                    return False
                continue  # torch's own first step, with found_inf = 0
            for p in missing:
                self.optimizer.state[p]['momentum_buffer'] = \
                    torch.zeros_like(p, memory_format=torch.preserve_format)
        return True

    def report_nonfinite(self) -> None:
        """Report the deferred checks since the last call, with one host
        sync (reading all their flags), as the immediate check does:
        ``'stop'`` raises :class:`NonFiniteLossError` naming the
        iteration(s) and their non-finite terms (no step was applied from
        the first of them on); ``'skip'`` logs and counts every skipped
        iteration, and raises once more than ``max_skipped`` were skipped.
        Nothing to do (and no sync) when nothing is pending.

        Raises:
            NonFiniteLossError: As described above.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        device = pending[0][1].device
        flags = torch.stack([p[1].to(device) for p in pending]).tolist()
        bad = [
            self._describe(loss, terms, where)
            for (where, _, loss, terms), flag in zip(pending, flags) if flag
        ]
        if not bad:
            return
        if self.on_nonfinite == 'stop':
            self._stop_flag = None
            self._stop_or_count_skip(
                '; '.join(bad),
                stop_note='. (Checked without a host sync and reported at '
                'the next log line: no optimizer step was applied from that '
                'iteration on.)')
        for what in bad:
            self._stop_or_count_skip(what)

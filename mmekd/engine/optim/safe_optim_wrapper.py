# Copyright (c) mmekd contributors. All rights reserved.
"""Optimizer wrappers that refuse (or skip) non-finite losses:
:class:`SafeOptimWrapper` (float32) and :class:`SafeAmpOptimWrapper` (mixed
precision), one behaviour (:class:`SafeOptimWrapperMixin`) on MMEngine's
``OptimWrapper`` and ``AmpOptimWrapper``.

Example (a config)::

    optim_wrapper = dict(
        type='mmekd.SafeOptimWrapper', on_nonfinite='skip', check='device',
        optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
"""
from contextlib import contextmanager
from typing import Dict, List, Optional, Protocol, runtime_checkable

import torch
import torch.distributed as torch_dist
import torch.nn as nn
from mmengine.device import (is_cuda_available, is_mlu_available,
                             is_musa_available, is_npu_available)
from mmengine.logging import MessageHub, print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from torch.profiler import record_function

from mmekd.registry import OPTIM_WRAPPERS
from mmekd.utils.numbers import config_int
from mmekd.utils.refusal import RefusalError
from .buffer_snapshot import BufferSnapshot

ON_NONFINITE = ('stop', 'skip')
CHECKS = ('host', 'device')
# A deferred check reports itself once this many iterations are pending
# (mmekd.DeferredRuntimeInfoHook reports at every log line, sooner).
MAX_PENDING = 1000
# The profiler range of the check's own work (snapshots, flags, restores):
# tools/benchmark_train.py --profile reports its host time per step.
CHECK_RANGE = 'mmekd.nonfinite_check'


class NonFiniteLossError(RefusalError, FloatingPointError):
    """The training loss is NaN or infinite."""


@runtime_checkable
class NonFiniteReporter(Protocol):
    """An optim wrapper whose non-finite check may wait on the device:
    :meth:`report_nonfinite` reads what is pending (one host sync) and
    stops or counts skips. :class:`mmekd.DeferredRuntimeInfoHook` calls it
    whenever it reads the logged losses."""

    def report_nonfinite(self) -> None:
        ...


class SafeOptimWrapperMixin:
    """The non-finite check of :class:`SafeOptimWrapper` and
    :class:`SafeAmpOptimWrapper` (the class docstrings say what it does),
    as overrides of MMEngine's verbs: ``optim_context`` (keeps the buffers,
    records the loss terms, counts one iteration however many ``backward``
    calls it holds), ``update_params`` and ``step``; plus
    ``check_backpropagated`` (:class:`mmekd.models.classifiers.
    multi_backward.MultiBackwardOptimWrapper`) and ``report_nonfinite``
    (:class:`NonFiniteReporter`)."""

    def _init_check(self, on_nonfinite: str, max_skipped: Optional[int],
                    check: str) -> None:
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f'on_nonfinite must be one of {ON_NONFINITE}, '
                             f'got {on_nonfinite!r}')
        if check not in CHECKS:
            raise ValueError(f'check must be one of {CHECKS}, got {check!r}')
        self.on_nonfinite = on_nonfinite
        self.max_skipped = config_int(max_skipped, 'max_skipped',
                                      allow_none=True)
        self.check = check
        self.num_skipped = 0
        self.skipped: List[str] = []  # where and why, one per skip
        self._snapshot: Optional[BufferSnapshot] = None
        self._snapshot_taken = False
        self._loss_terms: Optional[Dict[str, torch.Tensor]] = None
        self._window_has_grad = False
        self._told_host = False
        self._context_depth = 0
        self._context_backwards = 0
        # The check on the device (see the class docstring).
        self._deferring = False  # this iteration is checked on the device
        self._found_inf: Optional[torch.Tensor] = None  # for the next step
        self._stop_flag: Optional[torch.Tensor] = None  # 'stop': sticky
        self._pending: List[tuple] = []  # (where, flag, loss, loss terms)

    # ------------------------------------------------------------------ #
    # where the check runs
    # ------------------------------------------------------------------ #
    def _device_check_possible(self) -> bool:
        """The flag can skip the step on the device: every param group is
        ``fused`` (the fused step takes ``found_inf``), no accumulation and
        no ``clip_grad`` (it reads the gradient norm)."""
        groups = self.optimizer.param_groups
        return (self._accumulative_counts == 1 and not self.clip_grad_kwargs
                and bool(groups) and all(g.get('fused') for g in groups))

    @property
    def checks_on_device(self) -> bool:
        """Whether the check stays on the device (``check='device'`` where
        it can, see the class docstring)."""
        return self.check == 'device' and self._device_check_possible()

    def _check_on_device(self) -> bool:
        if self.checks_on_device:
            return True
        if self.check != 'device':
            return False
        if not self._told_host:
            self._told_host = True
            print_log(
                f"{type(self).__name__}: check='device' needs a fused "
                'optimizer without accumulation or clip_grad (and no loss '
                'scaler); this one checks non-finite losses on the host',
                logger='current')
        return False

    # ------------------------------------------------------------------ #
    # MMEngine's verbs
    # ------------------------------------------------------------------ #
    def _record_loss_terms(self, module: nn.Module, args, output) -> None:
        if isinstance(output, dict):
            self._loss_terms = output

    @contextmanager
    def optim_context(self, model: nn.Module):
        """MMEngine's context, plus: the buffers are kept where a skip may
        restore them, the loss terms of ``model``'s forward are recorded,
        and the ``backward`` calls made inside count as one iteration."""
        with record_function(CHECK_RANGE):
            handle = model.register_forward_hook(self._record_loss_terms)
            self._deferring = self._check_on_device()
            if self.on_nonfinite == 'skip' or self._deferring:
                # The forward updates BatchNorm statistics before the loss
                # can be checked (a deferred 'stop' skips the step too, and
                # reports later).
                if self._snapshot is None or \
                        self._snapshot.model is not model:
                    self._snapshot = BufferSnapshot(model)
                self._snapshot.take()
                self._snapshot_taken = True
        self._context_depth += 1
        try:
            with super().optim_context(model):
                yield
        finally:
            handle.remove()
            self._context_depth -= 1
            if self._context_depth == 0 and self._context_backwards:
                self._context_backwards = 0
                self._inner_count += 1

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """MMEngine's ``backward``; the calls made inside one
        :meth:`optim_context` count as one iteration (when it ends)."""
        super().backward(loss, **kwargs)
        if self._context_depth:
            self._inner_count -= 1
            self._context_backwards += 1

    def update_params(self,
                      loss: torch.Tensor,
                      step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        """Back-propagate and step, unless ``loss`` is not finite."""
        if self._deferring:
            try:
                with record_function(CHECK_RANGE):
                    skip = self._defer_check(loss, self._loss_terms)
                # Backward (non-finite gradients are never applied: the
                # fused step is skipped on the device), step, zero_grad.
                super().update_params(loss, step_kwargs, zero_kwargs)
                with record_function(CHECK_RANGE):
                    self._restore_buffers_where(skip)
            finally:
                self._end_iteration()
            return
        try:
            with record_function(CHECK_RANGE):
                finite = self._is_finite(loss)
            if finite:
                self._window_has_grad = True
                super().update_params(loss, step_kwargs, zero_kwargs)
            else:
                self._stop_or_count_skip(self._describe(loss))
                # Count the iteration (keeps accumulation windows aligned)
                # without backward; step only with gradients of other
                # iterations.
                self._inner_count += 1
                if self.should_update():
                    if self._window_has_grad:
                        self.step()
                    self.zero_grad(**(zero_kwargs or {}))
        finally:
            if self.should_update():
                self._window_has_grad = False
            self._end_iteration()

    def check_backpropagated(self, loss: torch.Tensor,
                             loss_terms: Dict[str, torch.Tensor]) -> bool:
        """The check of :meth:`update_params` for a model that has
        back-propagated its losses itself (several ``backward`` calls in
        :meth:`optim_context`, e.g. :class:`mmekd.DDNNClassifier`'s
        memory-efficient step), before it steps.

        Checked on the device, nothing is read on the host: the flag is
        handed to the next :meth:`step` (skipped on the device), the buffers
        are restored on the device, the check is reported by
        :meth:`report_nonfinite`, and True is returned.

        Returns:
            bool: True if the gradients may be used. Otherwise raises
            (``'stop'``) or, for ``'skip'``, zeroes all gradients of the
            accumulation window (they contain this iteration's non-finite
            values) and returns False.
        """
        try:
            if self._deferring:
                # Every backward is done: the buffers may be restored now.
                with record_function(CHECK_RANGE):
                    self._restore_buffers_where(
                        self._defer_check(loss, loss_terms))
                self._window_has_grad = True
                return True
            with record_function(CHECK_RANGE):
                finite = self._is_finite(loss)
            if finite:
                self._window_has_grad = True
                return True
            self._stop_or_count_skip(self._describe(loss, loss_terms))
            self.zero_grad()
            self._window_has_grad = False
            return False
        finally:
            self._end_iteration(keep_found_inf=True)

    def step(self, **kwargs) -> None:
        """MMEngine's ``step``; after a check on the device, the fused
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

    # ------------------------------------------------------------------ #
    # the check
    # ------------------------------------------------------------------ #
    def _end_iteration(self, keep_found_inf: bool = False) -> None:
        self._deferring = False
        if not keep_found_inf:
            self._found_inf = None
        self._loss_terms = None  # do not keep the graph alive
        self._snapshot_taken = False

    @staticmethod
    def _nonfinite_flag(loss: torch.Tensor) -> torch.Tensor:
        """A bool tensor on the loss's device: the loss is not finite here
        or on another rank (all-reduced with MAX; no host sync)."""
        bad = torch.isfinite(loss.detach()).logical_not_().any()
        if torch_dist.is_available() and torch_dist.is_initialized() \
                and torch_dist.get_world_size() > 1:
            # One rank's NaN poisons every rank's averaged gradients, and
            # ranks that skip backward must all skip it.
            bad = bad.to(torch.int32)
            torch_dist.all_reduce(bad, op=torch_dist.ReduceOp.MAX)
            bad = bad.bool()
        return bad

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

    def _stop_or_count_skip(self, what: str, stop_note: str = '') -> None:
        """Raise (``'stop'``, or too many skips) or log and count a skip
        (and restore the buffers). ``stop_note`` ends the ``'stop'``
        message."""
        if self.on_nonfinite == 'stop':
            raise NonFiniteLossError(
                f'Non-finite loss at {what}. Lower the learning rate, clip '
                'gradients (optim_wrapper.clip_grad=dict(max_norm=...)) or '
                "skip such iterations (optim_wrapper.on_nonfinite='skip')"
                + stop_note)
        self.num_skipped += 1
        self.skipped.append(what)
        if self._snapshot_taken:
            self._snapshot.restore()
            self._snapshot_taken = False
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
        if len(self._pending) >= MAX_PENDING:
            self.report_nonfinite()
        return skip

    def _restore_buffers_where(self, skip: torch.Tensor) -> None:
        """Put the buffers back where the device flag ``skip`` is set (no
        host sync). After the backward: BatchNorm's backward needs its
        running statistics unchanged."""
        if self._snapshot_taken:
            self._snapshot.restore_where(skip)
            self._snapshot_taken = False

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
        """Report the checks made on the device since the last call, with
        one host sync (reading all their flags), as the check on the host
        does: ``'stop'`` raises :class:`NonFiniteLossError` naming the
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


_DOC = """
    A NaN or infinite loss either stops training with
    :class:`NonFiniteLossError`, naming the iteration and every non-finite
    loss term (``on_nonfinite='stop'``), or drops the iteration: no
    backward, no optimizer step, no change to the weights or to the
    optimizer state (``on_nonfinite='skip'``). A skipped iteration leaves
    the model exactly as it was before it: its forward already updated the
    BatchNorm running statistics (with the non-finite batch), so every
    buffer is restored from a copy taken when the iteration's forward began
    (one flat copy per dtype: :class:`~.buffer_snapshot.BufferSnapshot`).
    Skipped iterations are counted in ``num_skipped``, logged, and training
    stops once more than ``max_skipped`` have been skipped, with a message
    naming the skipped iterations and their non-finite terms.

    The loss terms are read from the model's ``forward(mode='loss')`` output
    (a forward hook active only inside ``optim_context``), so any MMEngine
    model works; a model that back-propagates several times per iteration
    (the DDNN's memory-efficient step) gives them to
    ``check_backpropagated``. Its ``backward`` calls inside one
    ``optim_context`` count as one iteration. In distributed training the
    decision is taken jointly (all-reduce of one flag), so all ranks skip
    together and DDP's gradient all-reduce stays matched. With gradient
    accumulation a skipped iteration contributes no gradient; the step at
    the end of the window uses the other iterations, and is left out if
    every iteration of the window was skipped.

    **Where the check runs** (``check``). ``'host'`` reads one flag per
    iteration (``.item()``: on a GPU a device sync). ``'device'`` keeps it
    on the device where it can: every param group ``fused=True`` (torch's
    fused SGD/Adam/AdamW skip their update on the device when
    ``optimizer.found_inf`` is 1), ``accumulative_counts == 1``, no
    ``clip_grad`` and no loss scaler; elsewhere it checks on the host (said
    once in the log). On the device the flag is all-reduced (MAX) across
    ranks, given to the optimizer as ``found_inf``, the buffers are put
    back where it is set (``torch.where``), and the iteration is recorded
    as pending: :meth:`report_nonfinite` (:class:`NonFiniteReporter`) reads
    all pending flags with one sync and stops or counts the skips exactly as
    the host check does. :class:`mmekd.DeferredRuntimeInfoHook` (the
    default runtime's) calls it at every log line; without it the wrapper
    reports itself every 1000 iterations. With ``'stop'`` every step after
    the non-finite iteration is skipped as well (a sticky flag on the
    device), so the model is left as it was before that iteration when the
    error is raised. Momentum buffers of a fused SGD are created as zeros
    before their first step (a skipped first step would otherwise leave
    ``empty_like`` garbage in them); that equals torch's first step only
    for ``dampening=0``, so with dampening the first step of each parameter
    is checked on the host (once).

    Args:
        optimizer (torch.optim.Optimizer): As for MMEngine's wrapper.
        on_nonfinite (str): ``'stop'`` (default) or ``'skip'``.
        max_skipped (int, optional): With ``'skip'``, stop once more than
            this many iterations were skipped in total. Defaults to 10;
            ``None``: no limit.
        check (str): ``'host'`` (default) or ``'device'`` (see above).
"""


@OPTIM_WRAPPERS.register_module()
class SafeOptimWrapper(SafeOptimWrapperMixin, OptimWrapper):
    __doc__ = (':class:`OptimWrapper` that checks the loss before its '
               'update.\n' + _DOC + """        **kwargs: Other arguments of
            :class:`OptimWrapper` (``accumulative_counts``, ``clip_grad``).
    """)

    def __init__(self,
                 optimizer: torch.optim.Optimizer,
                 on_nonfinite: str = 'stop',
                 max_skipped: Optional[int] = 10,
                 check: str = 'host',
                 **kwargs):
        OptimWrapper.__init__(self, optimizer, **kwargs)
        self._init_check(on_nonfinite, max_skipped, check)


def _has_accelerator() -> bool:
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


@OPTIM_WRAPPERS.register_module()
class SafeAmpOptimWrapper(SafeOptimWrapperMixin, AmpOptimWrapper):
    __doc__ = (':class:`AmpOptimWrapper` (mixed precision) that checks the '
               'loss before its update.\n' + _DOC + """        loss_scale,
            dtype, use_fsdp: As for :class:`AmpOptimWrapper`. On the CPU
            (MMEngine's wrapper needs an accelerator) the forward runs in
            bfloat16 autocast without loss scaling (bfloat16 has float32's
            range); ``dtype='float16'`` is refused there.
        **kwargs: Other arguments of :class:`OptimWrapper`.

    The check runs on the host: the loss scaler owns the step's
    ``found_inf``.
    """)

    def __init__(self,
                 optimizer: torch.optim.Optimizer,
                 on_nonfinite: str = 'stop',
                 max_skipped: Optional[int] = 10,
                 check: str = 'host',
                 loss_scale='dynamic',
                 dtype=None,
                 use_fsdp: bool = False,
                 **kwargs):
        if _has_accelerator():
            AmpOptimWrapper.__init__(
                self, loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp,
                optimizer=optimizer, **kwargs)
        else:
            if dtype not in (None, 'bfloat16', torch.bfloat16):
                raise ValueError(
                    f'SafeAmpOptimWrapper on the CPU runs bfloat16 autocast; '
                    f'dtype={dtype!r} needs a GPU (use dtype=None or '
                    "'bfloat16')")
            OptimWrapper.__init__(self, optimizer, **kwargs)
            # What AmpOptimWrapper sets, for bfloat16 without scaling.
            self._scale_update_param = None
            self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
            self.cast_dtype = torch.bfloat16
        self._init_check(on_nonfinite, max_skipped, check)

    def _device_check_possible(self) -> bool:
        return False  # the loss scaler owns found_inf

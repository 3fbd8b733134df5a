# Copyright (c) mmekd contributors. All rights reserved.
"""``torch.compile`` for the DDNN training step
(``DDNNClassifier(compile_step=dict(...))``).

What is compiled are the step's functions of tensors
(:mod:`.memory_efficient_step`): the simple step's forward + losses (one
graph), or each segment of the memory-efficient step (one graph per
segment, with its net's head and losses where it ends one). The rest of the
step stays Python: the data preprocessor, the backward calls between
segments (AOTAutograd compiles each graph's backward too) and the optimizer
step (fused where the optimizer is).

Every function is compiled with ``fullgraph=True`` (a graph break is an
error, not a silent split) and ``dynamic=False`` (one batch shape: a last
partial batch compiles once more; use ``drop_last=True``). Each gets a code
object of its own: dynamo keeps one cache per code object, so the segments
of a step are first compilations each, never recompilations of one another,
and dynamo's recompile limit does not apply across them.

On the CPU with oneDNN, a model with strided 1x1 convolutions narrower than
oneDNN's channel block is compiled with inductor's layout optimisation off
(:mod:`mmekd.utils.onednn_fence`): its channels-last convolutions would
reach a oneDNN kernel that writes past its buffer.
"""
import time
import types
import warnings
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from mmekd.utils.onednn_fence import describe, onednn_hazards

# What ``compile_step`` may hold, with the defaults.
COMPILE_STEP_DEFAULTS = dict(
    backend='inductor',
    mode=None,
    options=None,
)


def parse_compile_step(value) -> Optional[dict]:
    """Check ``compile_step`` (False/None, True or a dict of
    :data:`COMPILE_STEP_DEFAULTS` keys) and return the full settings, or
    None (not compiled)."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise TypeError('compile_step must be a bool or a dict with keys '
                        f'{sorted(COMPILE_STEP_DEFAULTS)}, got {value!r}')
    unknown = sorted(set(value) - set(COMPILE_STEP_DEFAULTS))
    if unknown:
        raise ValueError(f'compile_step has unknown keys {unknown}; it takes '
                         f'{sorted(COMPILE_STEP_DEFAULTS)}')
    cfg = dict(COMPILE_STEP_DEFAULTS, **value)
    if cfg['mode'] not in (None, 'default', 'reduce-overhead',
                           'max-autotune', 'max-autotune-no-cudagraphs'):
        raise ValueError(f'compile_step.mode must be None or a '
                         f'torch.compile mode, got {cfg["mode"]!r}')
    if cfg['options'] is not None and not isinstance(cfg['options'], dict):
        raise TypeError('compile_step.options must be a dict of '
                        f'torch.compile options, got {cfg["options"]!r}')
    if cfg['options'] and cfg['mode'] not in (None, 'default'):
        raise ValueError('compile_step: torch.compile takes mode or options, '
                         f'not both (got mode={cfg["mode"]!r} and options)')
    return cfg


def own_code(fn: Callable, name: str) -> Callable:
    """``fn`` (a function or a bound method) with a code object of its own
    (see the module docstring)."""
    if isinstance(fn, types.MethodType):
        return types.MethodType(own_code(fn.__func__, name), fn.__self__)
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__,
                              fn.__closure__)


def _code_of(fn: Callable):
    return getattr(fn, '__func__', fn).__code__


class StepCompiler:
    """The compiled graphs of one model's step, compiled on first use.

    Call it as the ``functions`` of :class:`.MemoryEfficientStep`:
    ``compiler(kind, key, fn)`` returns the compiled ``fn`` for that
    ``(kind, key)`` (e.g. ``('segment', 3)``), compiling it the first time.
    :meth:`check_input` comes first in every step: it sees the batch and the
    model, and decides how the graphs are lowered on that device.

    Args:
        cfg (dict): The settings :func:`parse_compile_step` returns.

    Attributes:
        compile_seconds (float): Wall time of the calls that compiled.
        num_functions (int): Functions compiled.
    """

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self._fns: Dict[tuple, Callable] = {}
        self._codes = []  # code objects of the compiled functions
        self._new = set()  # compiled, not run yet: the first call compiles
        self._shape = None  # the batch shape the graphs were compiled for
        self._warned = set()
        self._hazards = None  # oneDNN fence, decided by the first batch
        self.compile_seconds = 0.0

    def __deepcopy__(self, memo):
        # A copied model (EMA, export) compiles its own graphs.
        return StepCompiler(dict(self.cfg))

    def __getstate__(self):
        return dict(cfg=self.cfg)

    def __setstate__(self, state):
        self.__init__(state['cfg'])

    @property
    def num_functions(self) -> int:
        return len(self._fns)

    def __call__(self, kind: str, key, fn: Callable) -> Callable:
        if self._hazards is None:
            raise RuntimeError('StepCompiler.check_input(inputs, model) must '
                               'see the batch before a function compiles')
        k = (kind, key)
        if k not in self._fns:
            fn = own_code(fn, f'{fn.__name__}_{kind}_{len(self._fns)}')
            self._codes.append(_code_of(fn))
            self._fns[k] = torch.compile(
                fn,
                backend=self.cfg['backend'],
                fullgraph=True,
                dynamic=False,
                **self.lowering())
            self._new.add(k)
        if k in self._new:
            return self._timed(k)
        return self._fns[k]

    def lowering(self) -> dict:
        """``mode`` and ``options`` of ``torch.compile``: the configured
        ones, with inductor's layout optimisation off where the model has
        convolutions the oneDNN fence names (the mode's options are then
        spelled out: torch.compile takes a mode or options)."""
        mode, options = self.cfg['mode'], self.cfg['options']
        if not self._hazards or self.cfg['backend'] != 'inductor':
            return dict(mode=mode, options=options)
        from torch._inductor import list_mode_options
        options = dict(list_mode_options(mode) if mode else {},
                       **(options or {}))
        for key in ('layout_optimization', 'force_layout_optimization'):
            if options.get(key):
                raise ValueError(
                    f'compile_step.options {key}=True would make '
                    f'{describe(self._hazards)} channels-last on the CPU, '
                    "where oneDNN's kernel writes past its buffer (see "
                    'mmekd/utils/onednn_fence.py); leave it unset')
        options['layout_optimization'] = False
        return dict(mode=None, options=options)

    def check_input(self, inputs: torch.Tensor, model: nn.Module) -> None:
        """Refuse what the compiled graphs cannot hold: CUDA graphs
        (``mode='reduce-overhead'``) off a CUDA device, and a batch whose
        shape differs from the first one's (``dynamic=False``: a last
        partial batch or a varying input size). With another mode a new
        shape compiles the graphs once more, with a warning. The first
        batch also decides the oneDNN fence from ``model``'s convolutions
        on the batch's device (see :meth:`lowering`)."""
        if self._hazards is None:
            self._hazards = onednn_hazards(model, inputs.device)
            self.lowering()  # a conflicting option fails here, not later
        if self.cfg['mode'] == 'reduce-overhead' and \
                inputs.device.type != 'cuda':
            raise ValueError(
                "compile_step.mode='reduce-overhead' captures CUDA graphs, "
                f'but the batch is on {inputs.device.type}: train on a GPU '
                "or use mode=None")
        shape = tuple(inputs.shape)
        if self._shape is None:
            self._shape = shape
            return
        if shape == self._shape:
            return
        msg = (f'compile_step compiled the step for batches of shape '
               f'{self._shape}, got {shape}: set train_dataloader.drop_last'
               '=True (a last partial batch) and a fixed input size')
        if self.cfg['mode'] == 'reduce-overhead':
            raise ValueError(msg + ' (CUDA graphs hold one shape)')
        if shape not in self._warned:
            self._warned.add(shape)
            warnings.warn(msg + '; compiling again for this shape')

    def cache_entries(self) -> int:
        """Graphs dynamo holds for the compiled functions: one per function
        once each has run; any more are recompilations."""
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list
        return sum(len(_debug_get_cache_entry_list(c)) for c in self._codes)

    def _timed(self, k) -> Callable:

        def first_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self._fns[k](*args, **kwargs)
            finally:
                self._new.discard(k)
                self.compile_seconds += time.perf_counter() - start

        return first_call


def dynamo_counts() -> Dict[str, int]:
    """Dynamo's counters (process-wide, cumulative): ``graphs`` (distinct
    graphs compiled) and ``graph_breaks``."""
    from torch._dynamo.utils import counters
    return dict(
        graphs=int(counters['stats']['unique_graphs']),
        graph_breaks=int(sum(counters['graph_break'].values())))

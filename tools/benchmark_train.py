# Copyright (c) mmekd contributors. All rights reserved.
"""Time a DDNN training step against training each of its nets alone.

In one process, on one synthetic batch of the config's input size, this
times (interleaved repetitions, medians):

* the DDNN step: full net + every sub-net + EKD losses + optimizer step,
  through ``model.train_step`` and an MMEngine optim wrapper, in both
  ``train_step_mode``\\ s (``memory_efficient``, the default, and
  ``simple``);
* each net trained alone the same way: a plain MMPretrain
  ``ImageClassifier`` of that net's architecture (``ResNet``/``ResNet_CIFAR``
  for standard block counts, ``mmekd.DepthDynamicResNet(stage_blocks=...)``
  otherwise).

It prints img/s of each, the ratio DDNN step time / sum of the separate step
times, peak memory (CUDA: peak allocated during the step plus the model's
parameters, gradients' and optimizer's state; any device: peak bytes saved
for backward, a device-independent proxy for activation memory) and the
ratio DDNN / full net alone, and achieved TFLOP/s (FLOPs from
``mmengine.analysis``; training = 3 x forward) as a share of the GPU's bf16
dense peak.

It times steps, it does not train: the optimizer runs with learning rate 0
(the same kernels, weights kept at their initialisation), so a narrow proxy
cannot diverge, and a non-finite loss skips its step instead of stopping the
run; a model with any non-finite loss is reported as diverged.

Each measurement is a small runner with one ``run()`` over every model
(warm-up, saved activations, live CPU memory, timing, profile); the memory
instruments are :mod:`mmekd.utils.memory_meters`.

Example::

    python tools/benchmark_train.py configs/ddnn_r34_cifar100.py --amp \\
        --channels-last
"""
import argparse
import copy
import inspect
import json
import statistics
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

# mmekd first: it quiets mmcv-lite's import warning before mmpretrain.
import mmekd  # noqa: F401,I001  (also registers the components)
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import OPTIM_WRAPPERS, init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch.profiler import profile

from mmekd.apis import plain_model_cfg
from mmekd.engine.optim import SafeOptimWrapperMixin
from mmekd.engine.optim.safe_optim_wrapper import CHECK_RANGE
from mmekd.models import DDNNClassifier
from mmekd.models.classifiers.compiled_step import (StepCompiler,
                                                    dynamo_counts,
                                                    parse_compile_step)
from mmekd.utils.cli import add_cfg_options, read_config, tool_main
from mmekd.utils.memory_meters import (LiveMemoryMeter, SavedTensorMeter,
                                       static_bytes)
from mmekd.utils.onednn_fence import refuse_channels_last

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device-name part.
BF16_PEAK_TFLOPS = OrderedDict([
    ('H200', 989.4),
    ('H100 PCIe', 756.0),
    ('H100', 989.4),
    ('A100', 312.0),
    ('L40S', 362.1),
    ('A10', 125.0),
])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Benchmark a DDNN training step against training its '
        'nets separately')
    parser.add_argument('config', help='DDNN config file')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='cuda or cpu (default: cuda when available)')
    parser.add_argument(
        '--batch-size',
        type=int,
        help="batch size (default: the config's on CUDA, 8 on CPU)")
    parser.add_argument(
        '--input-size',
        type=int,
        help="square input size (default: from the config's train "
        'pipeline)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: AmpOptimWrapper (CUDA, --amp-dtype) or bf16 '
        'autocast on CPU')
    parser.add_argument(
        '--amp-dtype',
        default='bfloat16',
        choices=['float16', 'bfloat16'],
        help='autocast dtype with --amp on CUDA')
    parser.add_argument(
        '--channels-last', action='store_true', help='channels_last models')
    parser.add_argument(
        '--compile',
        action='store_true',
        help='also time every model compiled, beside its eager run: the '
        "DDNN with model.compile_step (one graph for the simple step's "
        'forward + losses, one per segment of the memory-efficient step), '
        "each net alone with its forward compiled; graph breaks, "
        'recompilations after warm-up and compile time are reported')
    parser.add_argument(
        '--compile-backend',
        default='inductor',
        help="torch.compile backend with --compile (default inductor; "
        "'eager' only captures the graphs: a quick check on CPU)")
    parser.add_argument(
        '--compile-mode',
        help="torch.compile mode with --compile (e.g. 'reduce-overhead': "
        'CUDA graphs)')
    parser.add_argument(
        '--only',
        choices=['ddnn', 'memory_efficient', 'simple'],
        help='time the DDNN modes only (ddnn), or one mode (no nets '
        'alone, no step ratio)')
    parser.add_argument(
        '--no-mkldnn',
        action='store_true',
        help="CPU: ATen's own convolution instead of oneDNN's, for every "
        'model (for host-cost measurements at width 1, where oneDNN\'s '
        'setup per call dominates both eager and compiled steps)')
    parser.add_argument(
        '--steps',
        type=int,
        help='timed steps per repetition (CUDA 20, CPU 2)')
    parser.add_argument(
        '--warmup', type=int, help='untimed steps first (CUDA 10, CPU 1)')
    parser.add_argument(
        '--repeats',
        type=int,
        help='interleaved timed repetitions, medians reported (CUDA 5, CPU '
        '3)')
    parser.add_argument(
        '--peak-tflops',
        type=float,
        help="the GPU's dense bf16 peak (default: looked up by name)")
    parser.add_argument(
        '--profile',
        action='store_true',
        help='after timing, profile 5 steps of each DDNN model '
        '(torch.profiler) and print the operators with the most self time: '
        'where the host time of a step goes')
    parser.add_argument('--json', help='also write the results to this file')
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith('cuda')
    if args.steps is None:
        args.steps = 20 if on_gpu else 2
    if args.warmup is None:
        args.warmup = 10 if on_gpu else 1
    if args.repeats is None:
        args.repeats = 5 if on_gpu else 3
    for name in ('steps', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be >= 1')
    return args


# ---------------------------------------------------------------------- #
# models
# ---------------------------------------------------------------------- #
def input_size_from_cfg(cfg: Config) -> int:
    """The square training input size the config's pipeline produces."""
    size = None
    for t in cfg.train_dataloader.dataset.get('pipeline', []):
        for key in ('crop_size', 'scale'):
            if key in t and t.get('type') != 'RandomResize':
                v = t[key]
                size = v if isinstance(v, int) else max(v)
    if size is None:
        raise ValueError('could not find the input size in the train '
                         'pipeline; pass --input-size')
    return int(size)


def separate_model_cfgs(cfg: Config, ddnn: nn.Module) -> Dict[str, dict]:
    """One plain ``ImageClassifier`` config per net of ``ddnn``: what the
    export makes of it (:func:`mmekd.apis.plain_model_cfg`)."""
    return OrderedDict((net, plain_model_cfg(ddnn, net, cfg.model))
                       for net in ddnn.net_names)


def make_optim_wrapper(model: nn.Module, cfg: Config, args) -> OptimWrapper:
    """The config's optim wrapper at learning rate 0 (the benchmark times
    steps; see the module docstring), skipping non-finite steps without a
    limit where it is an :class:`mmekd.SafeOptimWrapper`."""
    wrapper_cfg = copy.deepcopy(cfg.optim_wrapper)
    wrapper_cfg.optimizer['lr'] = 0.0
    # The type as the runner finds it: in the config's default scope, whose
    # registry has mmekd's as a child (the root's finds direct children only).
    with OPTIM_WRAPPERS.switch_scope_and_registry(
            cfg.get('default_scope', 'mmpretrain')) as registry:
        wrapper_cls = registry.get(wrapper_cfg.get('type', 'OptimWrapper'))
    if issubclass(wrapper_cls, SafeOptimWrapperMixin):
        wrapper_cfg.update(on_nonfinite='skip', max_skipped=None)
    if args.amp:
        # MMEngine's AMP on CUDA; bfloat16 autocast on the CPU.
        wrapper_cfg.update(type='mmekd.SafeAmpOptimWrapper',
                           loss_scale='dynamic')
        wrapper_cfg.pop('check', None)
        if args.device.startswith('cuda'):
            wrapper_cfg['dtype'] = args.amp_dtype
    return build_optim_wrapper(model, wrapper_cfg)


class _AllNets(nn.Module):
    """Forward of every net of a DDNN (for FLOP counting)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return tuple(self.model.forward_nets(x)[0].values())


class _Tensor(nn.Module):

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, mode='tensor')


def forward_flops(model: nn.Module, size: int, device) -> float:
    """Forward FLOPs per image (2 x fvcore multiply-adds)."""
    from mmengine.analysis import FlopAnalyzer
    wrapped = _AllNets(model) if hasattr(model, 'forward_nets') else _Tensor(
        model)
    was_training = model.training
    model.eval()
    x = torch.randn(1, 3, size, size, device=device)
    analyzer = FlopAnalyzer(wrapped, (x, ))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        macs = analyzer.total()
    model.train(was_training)
    return 2.0 * macs


# ---------------------------------------------------------------------- #
# timing
# ---------------------------------------------------------------------- #
def synthetic_batch(n: int, size: int, num_classes: int, device,
                    channels_last: bool) -> dict:
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randint(
        0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (n, ), generator=gen)
    return dict(
        inputs=inputs.to(device),
        data_samples=[DataSample().set_gt_label(int(y)) for y in labels])


def _sync(device):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


class Entry:
    """A model under test and its measurements."""

    def __init__(self, name, model, wrapper, flops_per_img, compiled=False):
        self.name, self.model, self.wrapper = name, model, wrapper
        self.flops_per_img = flops_per_img
        self.compiled = compiled
        self.times: List[float] = []
        self.cuda_peak: Optional[int] = None
        self.saved_peak: Optional[int] = None
        self.live_peak: Optional[int] = None
        self.warmup_s: Optional[float] = None
        self.compile = dict(graphs=0, graph_breaks=0, recompiles=0)
        self.compiler = getattr(model, '_compiler', None)
        self.steps = 0
        self._nonfinite = None  # on the device: no sync per step
        # --profile: the non-finite check's time and the step's, per step
        self.check_ms: Optional[float] = None
        self.profiled_step_ms: Optional[float] = None

    def step(self, data):
        log_vars = self.model.train_step(data, self.wrapper)
        bad = (~torch.isfinite(log_vars['loss'].detach())).sum()
        self._nonfinite = bad if self._nonfinite is None else \
            self._nonfinite + bad
        self.steps += 1
        self.last_loss = log_vars['loss'].detach()
        return log_vars

    @property
    def nonfinite_steps(self) -> int:
        return 0 if self._nonfinite is None else int(self._nonfinite)


def default_step_mode() -> str:
    """``DDNNClassifier``'s default ``train_step_mode``."""
    return inspect.signature(
        DDNNClassifier.__init__).parameters['train_step_mode'].default


def compile_alone(model: nn.Module, args):
    """A net alone, compiled as the DDNN is (:class:`StepCompiler`): its
    forward (``extract_feat``) in one graph; the head's loss on the data
    samples stays eager. Returns the compiler."""
    compiler = StepCompiler(
        parse_compile_step(
            dict(backend=args.compile_backend, mode=args.compile_mode)))
    forward = model.extract_feat

    def extract_feat(inputs, *a, **kw):
        compiler.check_input(inputs, model)
        return compiler('alone', 0, forward)(inputs, *a, **kw)

    model.extract_feat = extract_feat
    return compiler


# ---------------------------------------------------------------------- #
# runners: each measures one thing of every entry (timm's benchmark.py)
# ---------------------------------------------------------------------- #
class StepRunner:
    """The entries under test, their batch and device; :meth:`run` measures
    one thing of every entry and stores it on the entry."""

    def __init__(self, entries: Sequence[Entry], data: dict, args):
        self.entries, self.data, self.args = entries, data, args
        self.device = torch.device(args.device)
        self.on_gpu = self.device.type == 'cuda'

    def run(self) -> None:
        raise NotImplementedError


class WarmupRunner(StepRunner):
    """``--warmup`` untimed steps each (compilation included): their time,
    and the graphs and graph breaks they made."""

    def run(self) -> None:
        for e in self.entries:
            before = dynamo_counts()
            _sync(self.device)
            start = time.perf_counter()
            for _ in range(self.args.warmup):
                e.step(self.data)
            _sync(self.device)
            e.warmup_s = time.perf_counter() - start
            after = dynamo_counts()
            e.compile['graphs'] = after['graphs'] - before['graphs']
            e.compile['graph_breaks'] = (after['graph_breaks'] -
                                         before['graph_breaks'])
            e.graphs_after_warmup = (e.compiler.cache_entries()
                                     if e.compiler else 0)


class SavedActivationRunner(StepRunner):
    """One untimed step each: the peak bytes saved for backward."""

    def run(self) -> None:
        for e in self.entries:
            with SavedTensorMeter(e.model) as meter:
                e.step(self.data)
            e.saved_peak = meter.peak


class LiveMemoryRunner(StepRunner):
    """CPU: every tensor alive over 3 steps each, plus the static bytes."""

    def run(self) -> None:
        for e in self.entries:
            static = static_bytes(e.model, e.wrapper)
            with LiveMemoryMeter() as live:
                for _ in range(3):
                    e.step(self.data)
            e.live_peak = live.peak + static


class TimingRunner(StepRunner):
    """``--repeats`` interleaved repetitions of ``--steps`` timed steps per
    entry (its seconds per step each time) and, on CUDA, the peak memory
    allocated during the steps plus the static bytes."""

    def run(self) -> None:
        for _ in range(self.args.repeats):
            for e in self.entries:
                self._time(e)

    def _time(self, e: Entry) -> None:
        if self.on_gpu:
            _sync(self.device)
            base = torch.cuda.memory_allocated(self.device)
            static = static_bytes(e.model, e.wrapper)
            torch.cuda.reset_peak_memory_stats(self.device)
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(self.args.steps):
            e.step(self.data)
        _sync(self.device)
        e.times.append((time.perf_counter() - start) / self.args.steps)
        if self.on_gpu:
            peak = torch.cuda.max_memory_allocated(self.device) - base
            e.cuda_peak = max(e.cuda_peak or 0, peak + static)


class ProfileRunner(StepRunner):
    """``--profile``: the operators with the most self time over 5 steps of
    each DDNN entry (after its warm-up), per step, and the share of the
    step spent in the optim wrapper's non-finite check (its
    ``mmekd.nonfinite_check`` range, children included, against the
    profiled step's wall time)."""

    steps = 5

    def run(self) -> None:
        for e in self.entries:
            if not e.name.startswith('ddnn['):
                continue
            with profile() as prof:
                _sync(self.device)
                start = time.perf_counter()
                for _ in range(self.steps):
                    e.step(self.data)
                _sync(self.device)
                wall = time.perf_counter() - start
            print(f'profile of {e.name}, {self.steps} steps (self CPU time '
                  'per step):')
            averages = prof.key_averages()
            events = sorted(averages, key=lambda a: -a.self_cpu_time_total)
            for a in events[:12]:
                print(f'  {a.key[:60]:<62}'
                      f'{a.self_cpu_time_total / self.steps / 1e3:>8.3f} ms'
                      f'{a.count / self.steps:>8.1f} calls')
            check_us = sum(a.cpu_time_total for a in averages
                           if a.key == CHECK_RANGE)
            e.profiled_step_ms = wall / self.steps * 1e3
            e.check_ms = check_us / self.steps / 1e3
            print(f'  {CHECK_RANGE} (the non-finite check, host time): '
                  f'{e.check_ms:.3f} ms of a {e.profiled_step_ms:.2f} ms '
                  f'profiled step ({e.check_ms / e.profiled_step_ms:.2%})')


# ---------------------------------------------------------------------- #
# the benchmark
# ---------------------------------------------------------------------- #
def load_benchmark_config(args) -> Config:
    """The config, with ``--cfg-options``, in its default scope, with the
    top-level data preprocessor given to the model."""
    cfg = read_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    # The per-parameter init report would bury the results.
    if not MMLogger.check_instance_created('benchmark_train'):
        MMLogger.get_instance('benchmark_train', log_level='WARNING')
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    return cfg


def step_modes(args) -> tuple:
    """The DDNN ``train_step_mode``\\ s timed."""
    modes = ('memory_efficient', 'simple')
    return (args.only, ) if args.only in modes else modes


def build_entries(cfg: Config, args, size: int) -> List[Entry]:
    """The DDNN in each step mode, then (unless ``--only``) each net alone;
    each also compiled with ``--compile``. Models are built from seed 0, on
    the device, in training mode, at learning rate 0."""
    device = torch.device(args.device)

    def build(model_cfg, **extra):
        torch.manual_seed(0)
        model = MODELS.build(dict(model_cfg, **extra))
        model.init_weights()
        if args.channels_last:
            # The DDNN refuses in its train_step; a net alone here.
            refuse_channels_last(model, device, '--channels-last')
            model.to(memory_format=torch.channels_last)
        return model.to(device).train()

    compile_cfg = dict(backend=args.compile_backend, mode=args.compile_mode)
    variants = (False, True) if args.compile else (False, )
    entries = []
    for mode in step_modes(args):
        for compiled in variants:
            model = build(
                copy.deepcopy(cfg.model), train_step_mode=mode,
                channels_last=args.channels_last,
                compile_step=compile_cfg if compiled else None)
            flops = entries[0].flops_per_img if entries else forward_flops(
                model, size, device)
            name = f'ddnn[{mode}]' + (' compiled' if compiled else '')
            entries.append(Entry(name, model,
                                 make_optim_wrapper(model, cfg, args), flops,
                                 compiled))
    if args.only is not None:
        return entries
    for net, model_cfg in separate_model_cfgs(cfg, entries[0].model).items():
        for compiled in variants:
            model = build(model_cfg)
            flops = forward_flops(model, size, device)
            compiler = compile_alone(model, args) if compiled else None
            entries.append(
                Entry(f'{net} alone' + (' compiled' if compiled else ''),
                      model, make_optim_wrapper(model, cfg, args), flops,
                      compiled))
            entries[-1].compiler = compiler
    return entries


def result_rows(entries: Sequence[Entry], batch: int,
                peak_tflops: Optional[float]) -> OrderedDict:
    """One row of results per entry (medians over the repetitions)."""
    rows = OrderedDict()
    for e in entries:
        t = statistics.median(e.times)
        tflops = 3 * e.flops_per_img * batch / t / 1e12
        rows[e.name] = dict(
            step_ms=t * 1e3,
            img_per_s=batch / t,
            train_gflop_per_img=3 * e.flops_per_img / 1e9,
            tflop_per_s=tflops,
            peak_share=tflops / peak_tflops if peak_tflops else None,
            saved_activations_mb=e.saved_peak / 2**20,
            cpu_live_mb=e.live_peak / 2**20 if e.live_peak else None,
            cuda_peak_mb=e.cuda_peak / 2**20 if e.cuda_peak else None,
            compiled=e.compiled,
            warmup_s=e.warmup_s,
            nonfinite_steps=e.nonfinite_steps,
            nonfinite_check_ms=e.check_ms,
            nonfinite_check_share=(e.check_ms / e.profiled_step_ms
                                   if e.check_ms is not None else None),
            last_loss=float(e.last_loss),
            total_steps=e.steps,
            **e.compile)
    return rows


def summarise(rows: Dict[str, dict], modes: Sequence[str], compiled: bool,
              on_gpu: bool) -> OrderedDict:
    """Ratios of the DDNN step to the nets alone (time, saved activations,
    CUDA peak or CPU live memory), compiled against eager, the diverged
    models and the default step mode."""
    summary = OrderedDict()
    for suffix in [''] + ([' compiled'] if compiled else []):
        tag = suffix.strip().replace(' ', '_')
        tag = f'_{tag}' if tag else ''
        alone = [n for n in rows
                 if n.endswith(' alone' + suffix) and n.count(' ') ==
                 1 + suffix.count(' ')]
        for mode in modes:
            r = rows[f'ddnn[{mode}]{suffix}']
            if alone:
                sum_alone = sum(rows[n]['step_ms'] for n in alone)
                full = rows['full alone' + suffix]
                summary[f'step_ratio_{mode}{tag}'] = r['step_ms'] / sum_alone
                summary[f'saved_activations_ratio_{mode}{tag}'] = (
                    r['saved_activations_mb'] / full['saved_activations_mb'])
                summary[f'cuda_peak_ratio_{mode}{tag}'] = (
                    r['cuda_peak_mb'] / full['cuda_peak_mb']
                    if on_gpu else None)
                summary[f'cpu_live_ratio_{mode}{tag}'] = (
                    None if on_gpu else r['cpu_live_mb'] / full['cpu_live_mb'])
            if r['nonfinite_check_share'] is not None:
                summary[f'nonfinite_check_share_{mode}{tag}'] = r[
                    'nonfinite_check_share']
            if suffix:
                eager = rows[f'ddnn[{mode}]']
                summary[f'compiled_vs_eager_{mode}'] = (
                    r['step_ms'] / eager['step_ms'])
                # Same weights (learning rate 0), same batch: same loss.
                summary[f'compiled_loss_rel_diff_{mode}'] = (
                    abs(r['last_loss'] - eager['last_loss']) /
                    max(abs(eager['last_loss']), 1e-12))
    summary['diverged'] = ', '.join(
        n for n, r in rows.items() if r['nonfinite_steps']) or 'none'
    default = default_step_mode()
    if compiled and default in modes:
        summary['default_mode'] = default
        summary['compiled_vs_eager_default_mode'] = summary[
            f'compiled_vs_eager_{default}']
    return summary


def device_peak(args) -> tuple:
    """``(device name, dense bf16 TFLOP/s or None)``."""
    if not args.device.startswith('cuda'):
        return 'cpu', args.peak_tflops
    name = torch.cuda.get_device_name(torch.device(args.device))
    peak = args.peak_tflops
    if peak is None:
        peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name),
                    None)
    return name, peak


def run_benchmark(args) -> dict:
    """The benchmark (``--no-mkldnn``: oneDNN off for its duration only)."""
    enabled = torch.backends.mkldnn.enabled
    if args.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    try:
        return _run_benchmark(args)
    finally:
        torch.backends.mkldnn.enabled = enabled


def _run_benchmark(args) -> dict:
    cfg = load_benchmark_config(args)
    on_gpu = args.device.startswith('cuda')
    size = args.input_size or input_size_from_cfg(cfg)
    batch = args.batch_size or (
        cfg.train_dataloader.batch_size if on_gpu else 8)
    entries = build_entries(cfg, args, size)
    data = synthetic_batch(batch, size, cfg.model.head.num_classes,
                           torch.device(args.device), args.channels_last)
    runners = [WarmupRunner, SavedActivationRunner]
    runners += [] if on_gpu else [LiveMemoryRunner]
    runners += [TimingRunner] + ([ProfileRunner] if args.profile else [])
    for runner in runners:
        runner(entries, data, args).run()
    for e in entries:
        # Any graph compiled after warm-up is a recompilation.
        if e.compiler:
            e.compile['recompiles'] = (e.compiler.cache_entries() -
                                       e.graphs_after_warmup)
    device_name, peak_tflops = device_peak(args)
    rows = result_rows(entries, batch, peak_tflops)
    return dict(
        config=args.config,
        device=device_name,
        batch_size=batch,
        input_size=size,
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile and dict(
            backend=args.compile_backend, mode=args.compile_mode),
        mkldnn=torch.backends.mkldnn.enabled,
        steps=args.steps,
        warmup=args.warmup,
        repeats=args.repeats,
        bf16_peak_tflops=peak_tflops,
        rows=rows,
        summary=summarise(rows, step_modes(args), args.compile, on_gpu))


def _fmt(v, spec):
    return 'n/a' if v is None else format(v, spec)


def print_results(res: dict) -> None:
    print(f"config {res['config']} | device {res['device']} | batch "
          f"{res['batch_size']} | input {res['input_size']} | amp "
          f"{res['amp']} | channels_last {res['channels_last']} | compile "
          f"{res['compile']} | mkldnn {res['mkldnn']} | {res['repeats']} x "
          f"{res['steps']} steps "
          f"(median), warmup {res['warmup']}")
    header = (f"{'model':<34}{'step ms':>10}{'img/s':>10}{'GFLOP/img':>11}"
              f"{'TFLOP/s':>9}{'of bf16':>9}{'saved MB':>10}{'peak MB':>10}"
              f"{'live MB':>10}")
    print(header)
    print('-' * len(header))
    for name, r in res['rows'].items():
        print(f"{name:<34}{r['step_ms']:>10.2f}{r['img_per_s']:>10.1f}"
              f"{r['train_gflop_per_img']:>11.3f}{r['tflop_per_s']:>9.4f}"
              f"{_fmt(r['peak_share'], '.1%'):>9}"
              f"{r['saved_activations_mb']:>10.2f}"
              f"{_fmt(r['cuda_peak_mb'], '.1f'):>10}"
              f"{_fmt(r['cpu_live_mb'], '.1f'):>10}")
    print('(saved MB: peak bytes saved for backward; peak MB: CUDA peak '
          'allocated during the step + parameters, optimizer state; live '
          'MB: the same for CPU tensors, over 3 steps with the cyclic GC '
          'off; n/a where not measured)')
    for name, r in res['rows'].items():
        if r['nonfinite_steps']:
            print(f"{name}: DIVERGED, non-finite loss in "
                  f"{r['nonfinite_steps']} of {r['total_steps']} steps "
                  '(skipped: its time is not a training step\'s)')
    compiled = [(n, r) for n, r in res['rows'].items() if r['compiled']]
    if compiled:
        print(f"{'compiled model':<34}{'warm-up s':>10}{'graphs':>8}"
              f"{'breaks':>8}{'recompiles':>11}")
        for name, r in compiled:
            print(f"{name:<34}{r['warmup_s']:>10.1f}{r['graphs']:>8}"
                  f"{r['graph_breaks']:>8}{r['recompiles']:>11}")
        print(f"(warm-up s: the {res['warmup']} warm-up steps, compilation "
              'included; recompiles: graphs compiled during the '
              f"{res['repeats']} x {res['steps']} timed steps and the "
              'memory measurements)')
    for key, v in res['summary'].items():
        spec = '.2e' if 'loss' in key else '.3f'
        print(f'{key}: {v if isinstance(v, str) else _fmt(v, spec)}')


@tool_main
def main(argv=None):
    args = parse_args(argv)
    res = run_benchmark(args)
    print_results(res)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)


if __name__ == '__main__':
    main()

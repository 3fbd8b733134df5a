# Copyright (c) mmekd contributors. All rights reserved.
"""Does the data pipeline keep up? A real training epoch against the
synthetic step of the same model, in one process.

1. ``runner.train()`` for ``--epochs`` through the config's real dataloader,
   hooks and logging (validation and checkpoints off); the time of every
   iteration is taken after it ends (the GPU synchronised). Real throughput:
   images per second over all iterations after ``--warmup`` (cuDNN
   autotuning, allocator growth).
2. ``model.train_step`` repeated ``--steps`` times on one batch taken from
   the same dataloader (so no loading, no hooks): synthetic throughput.

Prints both and ``epoch_vs_synthetic`` (real / synthetic; the target for
small datasets on a GPU is >= 0.9). Example::

    python tools/benchmark_epoch.py configs/ddnn_r34_cifar100_fastdata.py \\
        --amp --cfg-options optim_wrapper.dtype=bfloat16
"""
import argparse
import json
import tempfile
import time

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmekd  # noqa: F401  (registers components, safe checkpoint loading)
from mmekd.utils import (apply_dataloader_defaults, atomic_write,
                         check_amp_device, check_outputs_not_inputs,
                         enable_amp)
from mmekd.utils.cli import add_cfg_options, tool_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Real training epoch vs synthetic step throughput')
    parser.add_argument('config', help='training config')
    parser.add_argument('--epochs', type=int, default=1)
    parser.add_argument(
        '--warmup',
        type=int,
        default=20,
        help='iterations of the real run not timed (default 20)')
    parser.add_argument(
        '--steps',
        type=int,
        default=100,
        help='synthetic steps timed, after 10 untimed (default 100)')
    parser.add_argument(
        '--amp', action='store_true', help='mixed precision (GPU)')
    parser.add_argument('--work-dir', help='logs (default: a temp folder)')
    parser.add_argument('--json', help='also write the results here')
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    for name in ('epochs', 'steps'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be >= 1')
    if args.warmup < 0:
        parser.error('--warmup must be >= 0')
    return args


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class IterClock(Hook):
    """Time stamp after every training iteration (device synchronised)."""
    priority = 'LOWEST'

    def __init__(self):
        self.stamps = []
        self.batch_sizes = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        _sync()
        self.stamps.append(time.perf_counter())
        self.batch_sizes.append(len(data_batch['inputs']))


def build_cfg(args, work_dir: str) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.work_dir = work_dir
    if args.amp:
        enable_amp(cfg)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.train_cfg = dict(
        type='EpochBasedTrainLoop', max_epochs=args.epochs,
        val_interval=args.epochs + 1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint = None
    cfg.load_from, cfg.resume = None, False
    check_amp_device(cfg)
    apply_dataloader_defaults(cfg, False, False)
    return cfg


def real_throughput(clock: IterClock, warmup: int) -> float:
    n = len(clock.stamps)
    if n <= warmup + 1:
        raise SystemExit(f'the epoch has {n} iterations, not enough after '
                         f'--warmup {warmup}; lower --warmup or add epochs')
    images = sum(clock.batch_sizes[warmup + 1:])
    return images / (clock.stamps[-1] - clock.stamps[warmup])


def synthetic_throughput(runner: Runner, steps: int) -> float:
    """Images per second of ``steps`` train steps on one batch (after 10
    untimed ones), the device synchronised before and after."""
    batch = next(iter(runner.train_dataloader))
    model = runner.model
    model.train()
    for _ in range(10):
        model.train_step(batch, runner.optim_wrapper)
    _sync()
    start = time.perf_counter()
    for _ in range(steps):
        model.train_step(batch, runner.optim_wrapper)
    _sync()
    return len(batch['inputs']) * steps / (time.perf_counter() - start)


@tool_main
def main(argv=None):
    args = parse_args(argv)
    check_outputs_not_inputs(dict(json=args.json), dict(config=args.config))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_cfg(args, args.work_dir or tmp)
        runner = Runner.from_cfg(cfg)
        clock = IterClock()
        runner.register_hook(clock)
        start = time.perf_counter()
        runner.train()
        wall = time.perf_counter() - start
        real = real_throughput(clock, args.warmup)
        synthetic = synthetic_throughput(runner, args.steps)
    results = dict(
        config=args.config,
        device=(torch.cuda.get_device_name(0)
                if torch.cuda.is_available() else 'cpu'),
        batch_size=clock.batch_sizes[0],
        iterations=len(clock.stamps),
        epoch_wall_s=round(wall, 2),
        real_img_s=round(real, 1),
        synthetic_img_s=round(synthetic, 1),
        epoch_vs_synthetic=round(real / synthetic, 3))
    for key, value in results.items():
        print(f'{key}: {value}')
    if args.json:
        atomic_write(args.json, json.dumps(results, indent=2))
    return results


if __name__ == '__main__':
    main()

# Copyright (c) mmekd contributors. All rights reserved.
"""Train a model (MMPretrain's tools/train.py flags; mmekd components)."""
import argparse
import os
import os.path as osp

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmekd  # noqa: F401  (registers components, safe checkpoint loading)
from mmekd.engine.runner import SetupToLogFileRunner
from mmekd.evaluation import format_net_table
from mmekd.utils import (UnsafeCheckpointError, apply_dataloader_defaults,
                         apply_safe_training_defaults, check_amp_device,
                         check_checkpoint_hook, enable_amp, safe_load,
                         setup_cpu_distributed)
from mmekd.utils.cli import add_cfg_options, read_config, tool_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint; without a path, from the latest '
        'checkpoint in the work directory')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision, keeping the non-finite check '
        '(mmekd.SafeAmpOptimWrapper: MMEngine\'s AMP on a GPU, bfloat16 '
        'autocast on the CPU)')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate checkpoints during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual / base batch size')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='disable pin_memory in the dataloaders')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='disable persistent_workers in the dataloaders')
    parser.add_argument(
        '--on-nonfinite',
        choices=['stop', 'skip'],
        help='what a NaN/inf loss does: stop training with an error naming '
        'the loss term and iteration (default), or skip the iteration '
        'without updating weights or optimizer state (mmekd.SafeOptimWrapper)')
    add_cfg_options(parser)
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def report_auto_resume(work_dir: str) -> None:
    """Say what ``--resume`` without a path will do in ``work_dir``."""
    last = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(last):
        print(f'--resume: no checkpoint found in {work_dir} (no '
              'last_checkpoint file): training starts from scratch.',
              flush=True)
        return
    with open(last) as f:
        path = f.read().strip()
    if not osp.exists(path):  # a FIFO or device: the loader says what
        raise SystemExit(f'--resume: {last} names {path}, which does not '
                         'exist; give the checkpoint to resume from with '
                         '--resume PATH')
    print(f'--resume: resuming from {path}', flush=True)


def check_resume_checkpoint(path: str) -> None:
    """Refuse a ``--resume PATH`` that cannot resume a run, with the
    reason (missing, a directory, or weights without training state)."""
    if osp.isdir(path):
        raise SystemExit(f'--resume: {path} is a directory, not a '
                         'checkpoint file (give the .pth file inside it, or '
                         '--resume without a path to take the latest '
                         'checkpoint of the work directory)')
    if not osp.exists(path):  # a FIFO or device: the loader says what
        raise SystemExit(f'--resume: checkpoint {path} does not exist')
    try:
        ckpt = safe_load(path, map_location='cpu', mmap=True)
    except (UnsafeCheckpointError, RuntimeError) as e:
        raise SystemExit(f'--resume: {e}') from None
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if not (isinstance(meta, dict) and 'epoch' in meta and 'iter' in meta
            and 'state_dict' in ckpt):
        raise SystemExit(
            f'--resume: {path} is not a training checkpoint (it has no '
            "'meta' with the epoch and iteration, only weights), so there "
            'is no run to resume. To start training from these weights, '
            f'use --cfg-options load_from={path} without --resume.')


def merge_args(cfg: Config, args) -> Config:
    """Merge command-line arguments into the config."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
        report_auto_resume(cfg.work_dir)
    elif args.resume is not None:
        check_resume_checkpoint(args.resume)
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise SystemExit('--auto-scale-lr: the config has no '
                             'auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    check_amp_device(cfg)
    apply_dataloader_defaults(cfg, args.no_pin_memory,
                              args.no_persistent_workers)
    apply_safe_training_defaults(cfg, args.on_nonfinite)
    check_checkpoint_hook(cfg)
    return cfg


def last_val_metrics(runner: Runner) -> dict:
    """The metrics of the last validation, as logged by the runner."""
    return {
        key[len('val/'):]: buf.current()
        for key, buf in runner.message_hub.log_scalars.items()
        if key.startswith('val/')
    }


@tool_main
def main(argv=None):
    args = parse_args(argv)
    cfg = merge_args(read_config(args.config), args)
    # torchrun without a GPU: gloo process group + DDP of a CPU module.
    setup_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        # MMEngine's Runner; environment/config dumps go to the log file only.
        runner = SetupToLogFileRunner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    runner.train()

    table = format_net_table(last_val_metrics(runner), runner.model)
    if table and runner.rank == 0:
        print(f'\nTop-1 per net after {runner.epoch} epochs '
              f'(validation set of {osp.basename(args.config)}):\n{table}')


if __name__ == '__main__':
    main()

# Copyright (c) mmekd contributors. All rights reserved.
"""Test a checkpoint; prints top-1/top-5 of every net of a DDNN model."""
import argparse
import os
import os.path as osp
from contextlib import nullcontext

import mmengine
from mmengine.config import Config
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmekd  # noqa: F401  (registers components, safe checkpoint loading)
from mmekd.engine.hooks import CheckpointKeysHook
from mmekd.engine.runner import EvalRunner
from mmekd.evaluation import format_net_table
from mmekd.models.utils import recalibrate_bn
from mmekd.utils import (apply_dataloader_defaults, atomic_output,
                         check_outputs_not_inputs, setup_cpu_distributed)
from mmekd.utils.cli import add_cfg_options, read_config, tool_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs')
    parser.add_argument('--out', help='dump predictions to this pickle file')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='what --out saves: the metrics or the predictions (default)')
    parser.add_argument(
        '--net',
        help='net whose prediction is pred_score (e.g. full, sub0); all '
        'nets are still evaluated')
    parser.add_argument(
        '--recalibrate-bn',
        type=int,
        default=0,
        metavar='N',
        help='recompute the BatchNorm statistics of --net (default: the '
        "config's predict_net) on N training batches before testing; with "
        "shared BatchNorm only that net's row is then meaningful")
    add_cfg_options(parser)
    parser.add_argument(
        '--amp', action='store_true', help='mixed-precision inference')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='disable pin_memory in the dataloaders')
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


def merge_args(cfg: Config, args) -> Config:
    """Merge command-line arguments into the config."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if osp.isdir(args.checkpoint):
        raise SystemExit(f'checkpoint {args.checkpoint} is a directory, not '
                         'a checkpoint file (give the .pth file inside it)')
    if not osp.exists(args.checkpoint):  # not a regular file: the loader
        raise SystemExit(f'checkpoint {args.checkpoint} does not exist')
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg = cfg.get('test_cfg') or dict()
        cfg.test_cfg.fp16 = True
    if args.net is not None:
        cfg.model.predict_net = args.net
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    apply_dataloader_defaults(cfg, args.no_pin_memory, True)
    if args.out is None and args.out_item is not None:
        raise SystemExit('--out-item needs --out')
    check_outputs_not_inputs(
        dict(out=args.out),
        dict(config=args.config, checkpoint=args.checkpoint))
    return cfg


@tool_main
def main(argv=None):
    args = parse_args(argv)
    cfg = merge_args(read_config(args.config), args)
    # torchrun without a GPU: gloo process group + DDP of a CPU module.
    setup_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        # MMEngine's Runner; environment/config dumps go to the log file
        # only, the config into the run's own timestamped folder.
        runner = EvalRunner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    # MMEngine loads with strict=False and only warns about missing keys:
    # testing a checkpoint of another model must be an error instead.
    runner.register_hook(CheckpointKeysHook())
    # --out is written next to its path and renamed over it once complete
    # (by rank 0, which alone gathers the results).
    writes_out = bool(args.out) and runner.rank == 0
    with (atomic_output(args.out)
          if writes_out else nullcontext(args.out)) as out:
        if args.out and args.out_item in ('pred', None):
            runner.test_evaluator.metrics.append(
                DumpResults(out_file_path=out))
        if args.recalibrate_bn:
            # Load now (runner.test() then does not load again), then
            # re-estimate the net's statistics on training batches.
            runner.load_or_resume()
            net = args.net or cfg.model.get('predict_net')
            used = recalibrate_bn(
                runner.model, Runner.build_dataloader(cfg.train_dataloader),
                args.recalibrate_bn, net=net)
            runner.logger.info(
                f'BatchNorm statistics of {net} recalibrated on {used} '
                'training batches' + ('' if used == args.recalibrate_bn else
                                      f' ({args.recalibrate_bn} asked: the '
                                      'training dataloader is shorter)'))
        metrics = runner.test()
        if writes_out and args.out_item == 'metrics':
            mmengine.dump(metrics, out)
    table = format_net_table(metrics, runner.model)
    if table and runner.rank == 0:
        print(f'\nTest results of {args.checkpoint}:\n{table}')


if __name__ == '__main__':
    main()

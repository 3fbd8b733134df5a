# Copyright (c) mmekd contributors. All rights reserved.
"""Evaluate every net of a DDNN checkpoint with its stored BatchNorm
statistics and after re-calibrating them on N training batches.

    python tools/analysis/eval_recalibrated.py CONFIG CKPT --num-batches 20

A column says how many batches it actually averaged over: a training
dataloader shorter than N is used whole, with a warning.

With shared BatchNorm the stored statistics are a mixture over all nets;
each net is recalibrated on its own copy of the model (see
:func:`mmekd.models.utils.recalibrate_bn`) and evaluated on the config's
test_dataloader with its test_evaluator.
"""
import argparse
import copy

import mmengine
import torch
from mmengine.evaluator import Evaluator
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import mmekd  # noqa: F401
from mmekd.apis import load_ddnn_model
from mmekd.evaluation.net_table import per_net_metrics
from mmekd.models.utils import recalibrate_bn
from mmekd.utils import (atomic_output,
                         check_outputs_not_inputs)
from mmekd.utils.cli import add_cfg_options, read_config, tool_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Per-net accuracy with and without BN re-calibration')
    parser.add_argument('config', help='DDNN config file')
    parser.add_argument('checkpoint', help='DDNN checkpoint')
    parser.add_argument(
        '--num-batches',
        type=int,
        nargs='+',
        default=[20],
        help='train batches to recalibrate on (several: one column each)')
    parser.add_argument('--nets', nargs='+', help='nets (default: all)')
    parser.add_argument(
        '--out',
        help='write the results as JSON: "top1" per net and column, and '
        '"batches_used" per column')
    add_cfg_options(parser)
    return parser.parse_args(argv)


@torch.no_grad()
def evaluate(model, loader, evaluator_cfg) -> dict:
    evaluator = Evaluator(copy.deepcopy(evaluator_cfg))
    model.eval()
    for batch in loader:
        evaluator.process(model.test_step(batch), batch)
    return evaluator.evaluate(len(loader.dataset))


@tool_main
def main(argv=None):
    args = parse_args(argv)
    check_outputs_not_inputs(
        dict(out=args.out),
        dict(config=args.config, checkpoint=args.checkpoint))
    cfg = read_config(args.config, args.cfg_options)
    model = load_ddnn_model(cfg, args.checkpoint)
    model.eval_all_nets = True
    nets = args.nets or model.net_names
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmpretrain')):
        test_loader = Runner.build_dataloader(cfg.test_dataloader)
        train_loader = Runner.build_dataloader(cfg.train_dataloader)
        stored = per_net_metrics(
            evaluate(model, test_loader, cfg.test_evaluator))
        results = {net: {'stored': stored[net][1]} for net in nets}
        # Batches each column actually averaged over: a training loader
        # shorter than N is used whole (recalibrate_bn warns).
        used = {}
        for n in args.num_batches:
            for net in nets:
                recal = copy.deepcopy(model)
                used[n] = recalibrate_bn(recal, train_loader, n, net=net)
                metrics = per_net_metrics(
                    evaluate(recal, test_loader, cfg.test_evaluator))
                results[net][n] = metrics[net][1]
    header = ['net', 'blocks per stage', 'top-1 stored BN'] + [
        f'top-1 recal. {used[n]} batches'
        + ('' if used[n] == n else f' ({n} asked)') for n in args.num_batches
    ]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for net in nets:
        cells = [net, str(model.backbone.blocks_per_stage(net)),
                 f'{results[net]["stored"]:.2f}']
        stored_acc = results[net]['stored']
        cells += [
            f'{results[net][n]:.2f} ({results[net][n] - stored_acc:+.2f})'
            for n in args.num_batches
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    print('\n'.join(lines))
    if args.out:
        with atomic_output(args.out) as tmp:
            mmengine.dump(
                dict(top1={net: {str(k): v for k, v in r.items()}
                           for net, r in results.items()},
                     batches_used={str(n): used[n]
                                   for n in args.num_batches}), tmp)


if __name__ == '__main__':
    main()

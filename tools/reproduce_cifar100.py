# Copyright (c) mmekd contributors. All rights reserved.
"""Reproduce the DDNN-EKD claim on CIFAR-100: every row trained with one
fixed recipe and several seeds, each against its nets trained alone.

A row is a DDNN config in ``configs/reproduce_cifar100/`` (the rows and
their groups: :mod:`mmekd.apis.cifar100_reproduction`): ``ddnn`` (no
distillation), ``ddnn_kl``, ``ddnn_at``, ``ddnn_ekd`` (the claim), the
lever rows of ``docs/levers.md`` (``ekd_sub_kd_only``, ``ekd_sandwich``,
``ekd_t1``, ``ekd_private_bn``, ``adaptive_depth``) and, with
``--bottleneck``, ResNet-50 containing bottleneck ResNet-26/44 (``ddnn_b``,
``ddnn_b_ekd``). Every net of a row is also trained alone with the same
recipe (as ``tools/compare.py`` does; one machinery): ResNet-18 alone is
``sub0`` of every ResNet-34 row, trained once per seed.

Protocol ``--split val`` (default): train on the CIFAR-100 train file minus
the last 50 images of every class (45,000), evaluate on those (5,000).
``--split test``: the official pair, train on all 50,000 and evaluate on the
test file. The accuracy of the last epoch is reported (no best-epoch pick).

Example::

    python tools/reproduce_cifar100.py --data-root data/cifar100 \\
        --epochs 200 --seeds 0 1 2 --work-dir work_dirs/reproduce

writes ``<work-dir>/results.csv`` (one line per row, net and seed; the nets
alone as row ``alone``), ``<work-dir>/summary.md`` (per row: every net in
the DDNN and alone, their difference, mean ± std over seeds; the claim
check) and ``<work-dir>/<row>.{md,json,png}``, and prints the summary.

The rows train on the fast data path of their base config (batches from
memory, augmentation on the device: ``mmekd.InMemoryBatchDataset`` +
``mmekd.GPUAugmentPreprocessor``, same crop + flip recipe, no CPU workers);
``--stock-data`` uses MMPretrain's pipeline with CPU workers instead.
``--jobs N`` trains N runs at once (small CIFAR nets leave a large GPU
mostly idle).
"""
import argparse
import os
import os.path as osp

import mmekd  # noqa: F401  (registers components, safe checkpoint loading)
from mmengine.config import Config

from mmekd.apis import cifar100_reproduction as reproduction
from mmekd.apis.comparison import Comparison
from mmekd.apis.comparison_report import (checks, markdown, records,
                                          write_records, write_report)
from mmekd.apis.training_runs import run_comparisons
from mmekd.utils.cli import add_cfg_options, tool_main
from mmekd.utils.refusal import RefusalError

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs')
STOCK_DATA = osp.join(CONFIGS, '_base_', 'datasets', 'cifar100_bs128.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train every row of the CIFAR-100 comparison, each '
        'against its nets alone, and print one summary')
    parser.add_argument(
        '--data-root',
        required=True,
        help="folder that holds 'cifar-100-python/' (train, meta; test for "
        '--split test)')
    parser.add_argument(
        '--split',
        choices=['val', 'test'],
        default='val',
        help='val: 45k/5k carved from train; test: official train/test')
    parser.add_argument(
        '--val-per-class',
        type=int,
        default=50,
        help='with --split val: images of every class held out (the last '
        'ones in file order)')
    parser.add_argument('--epochs', type=int, default=200)
    parser.add_argument(
        '--schedule',
        choices=['step', 'cosine'],
        default='step',
        help='step: lr x0.2 at 30/60/80%% of the epochs; cosine: annealing')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument(
        '--ablation-seeds',
        type=int,
        nargs='+',
        help='seeds of the rows outside the claim, and of their nets alone '
        f'(default: --seeds); the claim rows '
        f'{list(reproduction.HEADLINE_ROWS)} always use --seeds')
    parser.add_argument(
        '--rows',
        nargs='+',
        default=list(reproduction.BASIC_ROWS),
        help=f'rows to run (default: {list(reproduction.BASIC_ROWS)}). '
        f'Known: {list(reproduction.ALL_ROWS)}')
    parser.add_argument(
        '--bottleneck',
        action='store_true',
        help='also run the bottleneck rows (ResNet-50 family)')
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--num-workers', type=int, default=4)
    parser.add_argument(
        '--max-per-class',
        type=int,
        default=None,
        help='train on at most this many images per class (smoke runs)')
    data = parser.add_mutually_exclusive_group()
    data.add_argument(
        '--fast-data',
        action='store_true',
        help="the rows' own data path (the default): training batches from "
        'memory (mmekd.InMemoryBatchDataset, no workers) with pad + crop + '
        'flip on the device (mmekd.GPUAugmentPreprocessor)')
    data.add_argument(
        '--stock-data',
        action='store_true',
        help="MMPretrain's pipeline instead, with --num-workers CPU workers")
    parser.add_argument(
        '--recalibrate-bn',
        type=int,
        default=0,
        metavar='N',
        help='also test every net of the DDNN rows with its BatchNorm '
        'statistics re-estimated on N training batches (tools/test.py '
        '--net NET --recalibrate-bn N), on batches augmented as in '
        "training. With norm_sharing='shared' BN stores a mixture of all "
        "nets' statistics; with the default 'stats' each net has its own "
        'running average already. Reported in an extra column')
    parser.add_argument(
        '--jobs',
        type=int,
        default=1,
        help='runs trained at the same time (default 1)')
    parser.add_argument('--work-dir', default='work_dirs/reproduce_cifar100')
    parser.add_argument(
        '--amp', action='store_true', help='mixed precision (GPU)')
    add_cfg_options(parser)
    parser.add_argument(
        '--skip-existing',
        action='store_true',
        help='reuse results of runs whose metrics file already exists')
    args = parser.parse_args(argv)
    if args.bottleneck:
        args.rows += [r for r in reproduction.ROW_GROUPS['bottleneck']
                      if r not in args.rows]
    for row in args.rows:
        try:
            reproduction.row_config_path(CONFIGS, row)
        except ValueError as e:
            parser.error(f'--rows: {e}')
    for name in ('epochs', 'jobs'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be >= 1')
    if args.recalibrate_bn < 0:
        parser.error('--recalibrate-bn must be >= 0')
    return args


def row_seeds(args, row: str) -> list:
    """--seeds for the claim rows, --ablation-seeds (if given) for the
    others."""
    if row in reproduction.HEADLINE_ROWS or args.ablation_seeds is None:
        return args.seeds
    return args.ablation_seeds


def comparisons(args) -> list:
    """One comparison per row: its config with the fixed recipe."""
    recipe = reproduction.recipe(
        args.data_root, args.epochs, schedule=args.schedule,
        split=args.split, val_per_class=args.val_per_class,
        batch_size=args.batch_size, num_workers=args.num_workers,
        max_per_class=args.max_per_class, fast_data=not args.stock_data,
        stock_data=Config.fromfile(STOCK_DATA) if args.stock_data else None)
    return [Comparison(row, reproduction.row_config(
        CONFIGS, row, recipe, args.cfg_options), row_seeds(args, row))
            for row in args.rows]


def summary_text(args, summaries: list) -> str:
    """Every row's table, then the claim check (and, with
    --recalibrate-bn, the same with re-estimated statistics)."""
    header = (f'CIFAR-100, split={args.split}, {args.epochs} epochs, '
              f'{args.schedule} schedule, batch {args.batch_size}, seeds '
              f'{args.seeds}'
              + (f' (ablation rows {args.ablation_seeds})'
                 if args.ablation_seeds else '') +
              f', {"stock" if args.stock_data else "fast data"} pipeline')
    parts = [header] + [markdown(s) for s in summaries]
    claim = [s for s in summaries if s['name'] in reproduction.HEADLINE_ROWS]
    targets = reproduction.CLAIM_TARGETS
    for recal, title in ((False, 'Claim check (mean over seeds):'),
                         (True, 'Claim check, DDNN nets with BN re-estimated '
                          'per net (mean over seeds):')):
        lines = [f"- {c['row']} {c['net']} ({c['arch']}): DDNN - alone = "
                 f"{c['delta']:+.2f} points (target {c['target']:+.1f}: "
                 f"{'met' if c['met'] else 'NOT met'})"
                 for c in checks(claim, targets['full'], targets['sub'],
                                 recalibrated=recal)]
        if lines:
            parts.append('\n'.join([title] + lines))
    return '\n\n'.join(parts)


@tool_main
def main(argv=None):
    args = parse_args(argv)
    problems = reproduction.check_data(args.data_root, args.split,
                                       args.val_per_class)
    if problems:
        raise RefusalError(f'--data-root {args.data_root}: ' +
                           '; '.join(problems))
    os.makedirs(args.work_dir, exist_ok=True)
    done = run_comparisons(
        comparisons(args), args.work_dir, osp.join(ROOT, 'tools'),
        amp=args.amp, jobs=args.jobs, skip_existing=args.skip_existing,
        recalibrate_bn=args.recalibrate_bn,
        log=lambda line: print(line, flush=True))
    for s in done.summaries:
        write_report(s, args.work_dir, stem=s['name'])
    csv_path = osp.join(args.work_dir, 'results.csv')
    write_records(records(done.plan, done.results), csv_path)
    text = summary_text(args, done.summaries)
    with open(osp.join(args.work_dir, 'summary.md'), 'w') as f:
        f.write(text + '\n')
    print('\n' + text + f'\n\nresults: {csv_path}')
    if done.unfinished:
        raise SystemExit(f'{len(done.unfinished)} run(s) failed: '
                         f'{done.unfinished}; see their logs under '
                         f'{args.work_dir}')


if __name__ == '__main__':
    main()

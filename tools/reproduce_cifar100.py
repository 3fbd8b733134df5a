# Copyright (c) mmekd contributors. All rights reserved.
"""Reproduce the DDNN-EKD claim on CIFAR-100: every row of the comparison
trained with one fixed recipe and several seeds, summarised in one table.

Rows (same recipe for all): ResNet-18 alone, ResNet-34 alone, DDNN ResNet-34
containing ResNet-18 without distillation, with KL only, with attention only
and with both (EKD); ``--bottleneck`` adds ResNet-50 containing bottleneck
ResNet-26/44, and those nets alone. The lever rows (``--rows``, see
``docs/levers.md``) change one loss lever of the EKD row each
(``ekd_sub_kd_only``, ``ekd_sandwich``, ``ekd_t1``, ``ekd_private_bn``) or
combine them as Adaptive Depth Networks do (``adaptive_depth``, whose
sub-net ``[2,2,3,2]`` alone is ``resnet34_2232``).

Protocol ``--split val`` (default): train on the CIFAR-100 train file minus
the last 50 images of every class (45,000), evaluate on those (5,000).
``--split test``: the official pair, train on all 50,000 and evaluate on the
test file. The accuracy of the last epoch is reported (no best-epoch pick).

Example::

    python tools/reproduce_cifar100.py --data-root data/cifar100 \\
        --epochs 200 --seeds 0 1 2 --work-dir work_dirs/reproduce

writes ``<work-dir>/results.csv`` (one line per row, net and seed) and
``<work-dir>/summary.md`` (mean ± std over seeds), and prints the summary.

On a GPU, ``--fast-data`` serves the training batches from memory and
augments them on the device (``mmekd.InMemoryBatchDataset`` +
``mmekd.GPUAugmentPreprocessor``: same crop + flip recipe, no CPU workers),
and ``--jobs N`` trains N runs at once (small CIFAR nets leave a large GPU
mostly idle).
"""
import argparse
import csv
import json
import math
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs')

# row -> (config, model overrides, {net in config: architecture it is}).
BASIC_ROWS = {
    'resnet18': ('baselines/resnet18_cifar100.py', {}, {
        'alone': 'ResNet-18'
    }),
    'resnet34': ('baselines/resnet34_cifar100.py', {}, {
        'alone': 'ResNet-34'
    }),
    'ddnn': ('ddnn_r34_cifar100.py', dict(kl_loss=None, at_loss=None), {
        'full': 'ResNet-34',
        'sub0': 'ResNet-18'
    }),
    'ddnn_kl': ('ddnn_r34_cifar100.py', dict(at_loss=None), {
        'full': 'ResNet-34',
        'sub0': 'ResNet-18'
    }),
    'ddnn_at': ('ddnn_r34_cifar100.py', dict(kl_loss=None), {
        'full': 'ResNet-34',
        'sub0': 'ResNet-18'
    }),
    'ddnn_ekd': ('ddnn_r34_cifar100.py', {}, {
        'full': 'ResNet-34',
        'sub0': 'ResNet-18'
    }),
}
# The loss levers of DDNNClassifier (docs/levers.md), one at a time on the
# EKD row, and their Adaptive-Depth-Networks combination (with the alone row
# of its sub-net).
_EKD_NETS = {'full': 'ResNet-34', 'sub0': 'ResNet-18'}
LEVER_ROWS = {
    'ekd_sub_kd_only': ('ddnn_r34_cifar100.py', dict(sub_ce_weight=0.0),
                        _EKD_NETS),
    # Two intermediate nets: each step trains the full net, ResNet-18 and one
    # of them.
    'ekd_sandwich': ('ddnn_r34_cifar100.py',
                     dict(backbone=dict(sub_stage_blocks=[[2, 2, 2, 2],
                                                    [2, 3, 4, 2],
                                                    [3, 3, 5, 3]]),
                          train_nets='sandwich_random'),
                     dict(_EKD_NETS, sub1='ResNet-34 [2,3,4,2]',
                          sub2='ResNet-34 [3,3,5,3]')),
    'ekd_t1': ('ddnn_r34_cifar100.py', dict(kl_loss=dict(tau=1.0)),
               _EKD_NETS),
    'ekd_private_bn': ('ddnn_r34_cifar100.py',
                       dict(backbone=dict(private_norm=True)), _EKD_NETS),
    'adaptive_depth': ('ddnn_r34_cifar100.py',
                       dict(backbone=dict(sub_stage_blocks=[[2, 2, 3, 2]],
                                          private_norm=True),
                            train_nets='sandwich',
                            sub_ce_weight=0.0,
                            full_loss_weight=0.5,
                            kl_loss=dict(tau=1.0, loss_weight=0.5),
                            at_loss=None),
                       {'full': 'ResNet-34', 'sub0': 'ResNet-34 [2,2,3,2]'}),
    'resnet34_2232': ('baselines/resnet34_cifar100.py',
                      dict(backbone=dict(type='mmekd.DepthDynamicResNetCIFAR',
                                         stage_blocks=[2, 2, 3, 2])),
                      {'alone': 'ResNet-34 [2,2,3,2]'}),
}
BOTTLENECK_ROWS = {
    'resnet26b': ('baselines/resnet26b_cifar100.py', {}, {
        'alone': 'ResNet-26b'
    }),
    'resnet44b': ('baselines/resnet44b_cifar100.py', {}, {
        'alone': 'ResNet-44b'
    }),
    'resnet50': ('baselines/resnet50_cifar100.py', {}, {
        'alone': 'ResNet-50'
    }),
    'ddnn_b': ('ddnn_r50_cifar100.py', dict(kl_loss=None, at_loss=None), {
        'full': 'ResNet-50',
        'sub0': 'ResNet-26b',
        'sub1': 'ResNet-44b'
    }),
    'ddnn_b_ekd': ('ddnn_r50_cifar100.py', {}, {
        'full': 'ResNet-50',
        'sub0': 'ResNet-26b',
        'sub1': 'ResNet-44b'
    }),
}
ALL_ROWS = {**BASIC_ROWS, **LEVER_ROWS, **BOTTLENECK_ROWS}
# The rows of the claim; --ablation-seeds gives the others fewer seeds.
HEADLINE_ROWS = ('resnet18', 'resnet34', 'ddnn_ekd', 'resnet26b', 'resnet44b',
                 'resnet50', 'ddnn_b_ekd')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train every row of the CIFAR-100 comparison and '
        'print one table')
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
        help=f'seeds of the rows outside the claim (default: --seeds); the '
        f'claim rows {list(HEADLINE_ROWS)} always use --seeds')
    parser.add_argument(
        '--rows',
        nargs='+',
        default=list(BASIC_ROWS),
        help=f'rows to run (default: all basic rows). Known: '
        f'{list(ALL_ROWS)}')
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
    parser.add_argument(
        '--fast-data',
        action='store_true',
        help='training batches from memory (mmekd.InMemoryBatchDataset, '
        'no workers) with pad + crop + flip on the device '
        '(mmekd.GPUAugmentPreprocessor)')
    parser.add_argument(
        '--recalibrate-bn',
        type=int,
        default=0,
        metavar='N',
        help='also test every net of the DDNN rows with its BatchNorm '
        'statistics re-estimated on N training batches (tools/test.py '
        '--net NET --recalibrate-bn N), on batches augmented as in '
        "training. With private_norm=False BN stores a mixture of all nets' "
        "statistics; with the default 'stats' each net has its own running "
        'average already. Reported in an extra column')
    parser.add_argument(
        '--jobs',
        type=int,
        default=1,
        help='runs trained at the same time (default 1)')
    parser.add_argument('--work-dir', default='work_dirs/reproduce_cifar100')
    parser.add_argument(
        '--amp', action='store_true', help='mixed precision (GPU)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        help='extra key=value overrides passed to tools/train.py for every '
        'row (e.g. to shrink models in a smoke test)')
    parser.add_argument(
        '--skip-existing',
        action='store_true',
        help='reuse results of runs whose metrics file already exists')
    args = parser.parse_args(argv)
    if args.bottleneck:
        args.rows += [r for r in BOTTLENECK_ROWS if r not in args.rows]
    known = ALL_ROWS
    unknown = [r for r in args.rows if r not in known]
    if unknown:
        parser.error(f'unknown rows {unknown}; known: {list(known)}')
    if args.epochs < 1:
        parser.error('--epochs must be >= 1')
    if args.jobs < 1:
        parser.error('--jobs must be >= 1')
    if args.recalibrate_bn < 0:
        parser.error('--recalibrate-bn must be >= 0')
    folder = osp.join(args.data_root, 'cifar-100-python')
    needed = ['train', 'meta'] + (['test'] if args.split == 'test' else [])
    missing = [f for f in needed if not osp.isfile(osp.join(folder, f))]
    if missing:
        parser.error(f'--data-root {args.data_root}: missing {missing} in '
                     f'{folder}')
    return args


def row_config(args, row: str, seed: int) -> str:
    """The config of one run: the row's config plus the fixed recipe."""
    config, model_overrides, _ = ALL_ROWS[row]
    e = args.epochs
    if args.schedule == 'step':
        milestones = sorted({max(1, round(e * f)) for f in (0.3, 0.6, 0.8)})
        scheduler = dict(
            type='MultiStepLR', by_epoch=True, milestones=milestones,
            gamma=0.2)
    else:
        scheduler = dict(
            type='CosineAnnealingLR', by_epoch=True, begin=0, end=e, T_max=e)
    data_root = osp.abspath(args.data_root)
    if args.split == 'val':
        v = args.val_per_class
        train_set = dict(split='train', val_per_class=v, subset='train')
        val_set = dict(split='train', val_per_class=v, subset='val')
    else:
        train_set = dict(split='train', val_per_class=0, subset='all')
        val_set = dict(split='test', val_per_class=0, subset='all')
    train_set.update(data_root=data_root, max_per_class=args.max_per_class)
    val_set.update(data_root=data_root)
    workers = dict(
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0)
    train_loader = dict(
        batch_size=args.batch_size, dataset=train_set, **workers)
    if args.fast_data:
        # Same recipe (pad 4 + random crop 32 + horizontal flip), done on
        # the device for the whole batch; batches gathered in memory.
        train_loader = dict(
            batch_size=args.batch_size,
            num_workers=0,
            persistent_workers=False,
            collate_fn=dict(type='mmekd.batch_collate'),
            dataset=dict(
                _delete_=True,
                type='mmekd.InMemoryBatchDataset',
                dataset=dict(
                    type='mmekd.CIFAR100',
                    pipeline=[dict(type='PackInputs')],
                    **train_set)))
    cfg = {
        'train_cfg': dict(max_epochs=e, val_interval=e),
        'param_scheduler': dict(_delete_=True, **scheduler),
        'randomness': dict(seed=seed, deterministic=False),
        'train_dataloader': train_loader,
        'val_dataloader': dict(dataset=val_set, **workers),
        'test_dataloader': dict(dataset=val_set, **workers),
        'default_hooks': dict(
            checkpoint=dict(interval=e, max_keep_ckpts=1, save_best=None),
            logger=dict(interval=50)),
    }
    if args.fast_data:
        cfg['data_preprocessor'] = dict(
            type='mmekd.GPUAugmentPreprocessor', padding=4, flip_prob=0.5)
    if model_overrides:
        cfg['model'] = model_overrides
    lines = [
        '# Generated by tools/reproduce_cifar100.py: the row\'s config plus',
        '# the fixed recipe of the comparison.',
        f"_base_ = [{osp.join(CONFIGS, config)!r}]",
    ] + [f'{k} = {v!r}' for k, v in cfg.items()]
    # Beside the run's work dir: the runner dumps its merged config inside.
    path = osp.join(args.work_dir, row, f'seed{seed}.py')
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def run(cmd: List[str], log_path: str) -> None:
    with open(log_path, 'w') as log:
        proc = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-30:])
        raise SystemExit(f'command failed ({proc.returncode}): '
                         f'{" ".join(cmd)}\n--- {log_path} ---\n{tail}')


def test_run(args, config: str, ckpt: str, work_dir: str, out: str,
             log: str, extra: List[str] = ()) -> Dict[str, float]:
    """tools/test.py on ``ckpt`` (its output in ``log``); the metrics it
    writes to ``out``."""
    test = [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config, ckpt,
            '--work-dir', work_dir, '--out', out, '--out-item', 'metrics',
            *extra]
    if args.cfg_options:
        test += ['--cfg-options'] + list(args.cfg_options)
    run(test, log)
    with open(out) as f:
        return json.load(f)


def recalibrated_metrics(args, row: str, config: str, ckpt: str,
                         work_dir: str) -> Dict[str, float]:
    """``recal/<net>/top1|top5`` of every net of a DDNN row, each tested
    with its own re-estimated BatchNorm statistics."""
    nets = ALL_ROWS[row][2]
    if not args.recalibrate_bn or 'alone' in nets:
        return {}
    metrics = {}
    for net in nets:
        out = osp.join(work_dir, f'metrics_recal_{net}.json')
        if args.skip_existing and osp.isfile(out):
            with open(out) as f:
                result = json.load(f)
        else:
            result = test_run(
                args, config, ckpt, work_dir, out,
                osp.join(work_dir, f'test_recal_{net}_stdout.log'),
                ['--net', net, '--recalibrate-bn', str(args.recalibrate_bn)])
        for k in ('top1', 'top5'):
            metrics[f'recal/{net}/{k}'] = result[f'{net}/{k}']
    return metrics


def train_and_test(args, row: str, seed: int) -> Dict[str, float]:
    """Train one run and return the metrics of its last epoch."""
    config = row_config(args, row, seed)
    work_dir = osp.splitext(config)[0]
    os.makedirs(work_dir, exist_ok=True)
    metrics_file = osp.join(work_dir, 'metrics.json')
    timing_file = osp.join(work_dir, 'timing.json')
    ckpt = osp.join(work_dir, f'epoch_{args.epochs}.pth')
    if args.skip_existing and osp.isfile(metrics_file):
        with open(metrics_file) as f:
            metrics = json.load(f)
        if osp.isfile(timing_file):
            with open(timing_file) as f:
                metrics.update(json.load(f))
        metrics.update(
            recalibrated_metrics(args, row, config, ckpt, work_dir))
        return metrics
    train = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
             '--work-dir', work_dir]
    if args.amp:
        train.append('--amp')
    if args.cfg_options:
        train += ['--cfg-options'] + list(args.cfg_options)
    print(f'[{row} seed {seed}] training ({args.epochs} epochs)...',
          flush=True)
    start = time.perf_counter()
    run(train, osp.join(work_dir, 'train_stdout.log'))
    timing = dict(train_s=round(time.perf_counter() - start, 1))
    metrics = test_run(args, config, ckpt, work_dir, metrics_file,
                       osp.join(work_dir, 'test_stdout.log'))
    metrics.update(recalibrated_metrics(args, row, config, ckpt, work_dir))
    with open(timing_file, 'w') as f:
        json.dump(timing, f)
    print(f'[{row} seed {seed}] done in {timing["train_s"]:.0f} s',
          flush=True)
    return dict(metrics, **timing)


def net_metrics(metrics: Dict[str, float], net: str) -> Dict[str, float]:
    """Top-1/top-5 of ``net`` ('alone' = a plain classifier's accuracy)."""
    prefix = 'accuracy' if net == 'alone' else net
    return {
        'top1': metrics[f'{prefix}/top1'],
        'top5': metrics.get(f'{prefix}/top5', float('nan')),
        'top1_recal': metrics.get(f'recal/{net}/top1', float('nan'))
    }


def _mean(values: List[float]) -> float:
    return statistics.mean(values) if values else float('nan')


def _recal(records: List[dict]) -> List[float]:
    """The recalibrated top-1 of the records that have one."""
    return [r['top1_recal'] for r in records
            if not math.isnan(r['top1_recal'])]


def summarise(records: List[dict]) -> str:
    """Markdown table, mean ± std over seeds, one line per row and net."""
    groups = {}
    for r in records:
        groups.setdefault((r['row'], r['net'], r['arch']), []).append(r)
    recal = bool(_recal(records))
    lines = [
        '| row | net | architecture | top-1 (%) mean ± std | top-5 (%) | ' +
        ('top-1, BN re-estimated per net (%) | ' if recal else '') +
        'seeds |', '|---|---|---|---|---|---|' + ('---|' if recal else '')
    ]
    for (row, net, arch), rs in groups.items():
        t1 = [r['top1'] for r in rs]
        t5 = [r['top5'] for r in rs]
        std = statistics.stdev(t1) if len(t1) > 1 else 0.0
        extra = ''
        if recal:
            t1r = _recal(rs)
            extra = f'{_mean(t1r):.2f} | ' if t1r else '– | '
        lines.append(f'| {row} | {net} | {arch} | '
                     f'{statistics.mean(t1):.2f} ± {std:.2f} | '
                     f'{statistics.mean(t5):.2f} | {extra}{len(rs)} |')
    # The claim: EKD sub-nets vs the same nets alone, EKD full vs alone.
    means = {(k[0], k[2]): _mean([r['top1'] for r in v])
             for k, v in groups.items()}
    means_recal = {(k[0], k[2]): _mean(_recal(v))
                   for k, v in groups.items()}
    checks, checks_recal = [], []
    for ekd_row, alone in (('ddnn_ekd', {'ResNet-18': 'resnet18',
                                         'ResNet-34': 'resnet34'}),
                           ('ddnn_b_ekd', {'ResNet-26b': 'resnet26b',
                                           'ResNet-44b': 'resnet44b',
                                           'ResNet-50': 'resnet50'})):
        for arch, base_row in alone.items():
            if (ekd_row, arch) not in means or (base_row, arch) not in means:
                continue
            full = arch in ('ResNet-34', 'ResNet-50')
            target = -0.3 if full else 1.0
            for table, out in ((means, checks), (means_recal, checks_recal)):
                delta = table[(ekd_row, arch)] - means[(base_row, arch)]
                if math.isnan(delta):  # no recalibrated numbers
                    continue
                ok = 'met' if delta >= target else 'NOT met'
                out.append(f'- {arch}: {ekd_row} - alone = {delta:+.2f} '
                           f'points (target {target:+.1f}: {ok})')
    if checks:
        lines += ['', 'Claim check (mean over seeds):'] + checks
    if checks_recal:
        lines += ['', 'Claim check, DDNN nets with BN re-estimated per net '
                  '(mean over seeds):'] + checks_recal
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    records = []
    known = ALL_ROWS
    runs = [(row, seed) for row in args.rows
            for seed in (args.seeds if row in HEADLINE_ROWS
                         or args.ablation_seeds is None else
                         args.ablation_seeds)]

    def one(run_key):
        row, seed = run_key
        try:
            return train_and_test(args, row, seed)
        except SystemExit as e:  # a failed command: report, go on
            print(f'[{row} seed {seed}] FAILED: {e}', flush=True)
            return None

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, runs))
    failed = [r for r, m in zip(runs, results) if m is None]
    for (row, seed), metrics in zip(runs, results):
        if metrics is None:
            continue
        for net, arch in known[row][2].items():
            records.append(
                dict(row=row, net=net, arch=arch, seed=seed,
                     **net_metrics(metrics, net),
                     train_s=metrics.get('train_s', float('nan'))))
    csv_path = osp.join(args.work_dir, 'results.csv')
    with open(csv_path, 'w', newline='') as f:
        writer = csv.DictWriter(
            f,
            fieldnames=['row', 'net', 'arch', 'seed', 'top1', 'top5',
                        'top1_recal', 'train_s'])
        writer.writeheader()
        writer.writerows(records)
    summary = summarise(records)
    header = (f'CIFAR-100, split={args.split}, {args.epochs} epochs, '
              f'{args.schedule} schedule, batch {args.batch_size}, seeds '
              f'{args.seeds}'
              + (f' (ablation rows {args.ablation_seeds})'
                 if args.ablation_seeds else '') +
              f', {"fast data" if args.fast_data else "stock"} '
              f'pipeline\n\n')
    with open(osp.join(args.work_dir, 'summary.md'), 'w') as f:
        f.write(header + summary + '\n')
    print('\n' + header + summary)
    print(f'\nresults: {csv_path}')
    if failed:
        raise SystemExit(f'{len(failed)} run(s) failed: {failed}; see '
                         f'their logs under {args.work_dir}')


if __name__ == '__main__':
    main()

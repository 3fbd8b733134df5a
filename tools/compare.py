# Copyright (c) mmekd contributors. All rights reserved.
"""Train a DDNN config and each of its nets alone with the same recipe, and
compare them in one table.

Any DDNN config works (any dataset, an image folder included; any backbone
mmekd supports). For every seed this trains (``tools/train.py``) and tests
(``tools/test.py``) the DDNN and one config per net: the net as a plain
classifier, everything else the DDNN config's
(:func:`mmekd.apis.alone_config`). It prints, and writes to
``<work-dir>/compare.md`` / ``compare.json``, per net: top-1/top-5 in the
DDNN and alone, the difference (mean ± std over the seeds), params and
FLOPs (of the exported net, one image), and the DDNN run's wall time
against the sum of the runs alone; ``compare.png`` plots accuracy against
FLOPs, the nets alone as separate markers.

Example::

    python tools/compare.py configs/ddnn_demo_digits.py --epochs 1 \\
        --cfg-options model.backbone.stem_channels=4 \\
        model.backbone.base_channels=4 model.head.in_channels=32

Runs live in ``<work-dir>/<config stem>/seed<k>`` and
``<work-dir>/alone/<arch>-<digest>/seed<k>``; ``--skip-existing`` reuses
the finished ones (a net alone shared with another comparison in the same
work dir is trained once).
"""
import argparse
import os.path as osp

import mmekd  # noqa: F401  (registers components, safe checkpoint loading)
from mmekd.apis.comparison import Comparison
from mmekd.apis.comparison_report import markdown, write_report
from mmekd.apis.training_runs import run_comparisons
from mmekd.utils.cli import add_cfg_options, read_config, tool_main
from mmekd.utils.refusal import RefusalError

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a DDNN and each of its nets alone with the same '
        'recipe; one table')
    parser.add_argument('config', help='DDNN config file')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='seeds of every run (default: 0)')
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs trained at the same time (default 1)')
    parser.add_argument(
        '--epochs', type=int,
        help="training epochs of every run (default: the config's)")
    parser.add_argument(
        '--work-dir',
        help='runs and report (default: work_dirs/compare/<config stem>)')
    parser.add_argument(
        '--skip-existing', action='store_true',
        help='reuse the runs whose metrics exist (their config must be the '
        'one asked for)')
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision training (GPU)')
    parser.add_argument(
        '--recalibrate-bn', type=int, default=0, metavar='N',
        help='also test every net of the DDNN with its BatchNorm statistics '
        're-estimated on N training batches (another column)')
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    for name in ('jobs', 'epochs'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name} must be >= 1')
    if args.recalibrate_bn < 0:
        parser.error('--recalibrate-bn must be >= 0')
    return args


def comparison_config(args):
    """The DDNN config with ``--cfg-options`` and ``--epochs``."""
    cfg = read_config(args.config, args.cfg_options)
    if args.epochs is not None:
        train_cfg = cfg.get('train_cfg') or {}
        if train_cfg.get('type', 'EpochBasedTrainLoop') not in (
                'EpochBasedTrainLoop', 'mmekd.KnowledgeEvolutionTrainLoop'
        ) or train_cfg.get('by_epoch') is False:
            raise RefusalError(
                f'--epochs: {args.config} does not train by epochs '
                f'(train_cfg={dict(train_cfg)}); set its length with '
                '--cfg-options train_cfg.max_iters=N')
        cfg.merge_from_dict({'train_cfg.max_epochs': args.epochs})
    return cfg


@tool_main
def main(argv=None):
    args = parse_args(argv)
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or osp.join('work_dirs', 'compare', name)
    done = run_comparisons(
        [Comparison(name, comparison_config(args), args.seeds)], work_dir,
        osp.join(ROOT, 'tools'), amp=args.amp, jobs=args.jobs,
        skip_existing=args.skip_existing, recalibrate_bn=args.recalibrate_bn,
        log=lambda line: print(line, flush=True))
    summary = done.summaries[0]
    paths = write_report(summary, work_dir)
    print('\n' + markdown(summary) + '\n\nwritten: ' + ', '.join(paths))
    if done.unfinished:
        raise SystemExit(f'{len(done.unfinished)} run(s) failed: '
                         f'{done.unfinished}; see their logs under {work_dir}')
    return summary


if __name__ == '__main__':
    main()

# Copyright (c) mmekd contributors. All rights reserved.
"""The whole GPU evidence of the DDNN-EKD claim in one command, one report.

On one H100/H200 with the CIFAR-100 train split, within ``--budget-s``
(default 570 s, inside the 11-minute target) of wall time, this runs:

(a) ``tools/benchmark_train.py``: CIFAR ResNet-34 containing ResNet-18 at
    batch 128, bf16, eager and ``torch.compile``\\ d, and ResNet-34 containing
    ResNet-18 at 224x224, batch 256, bf16, channels_last: img/s of the DDNN
    step and of each net alone, step ratio, CUDA peak ratio and the share of
    the GPU's dense bf16 peak (looked up from the device name);
(b) ``tools/benchmark_epoch.py``: a real training epoch (fast data path)
    against the synthetic step;
(c) ``tools/reproduce_cifar100.py`` on the val split (45,000 / 5,000):
    the EKD row with its nets alone (ResNet-34, ResNet-18; ``--seeds``,
    default 3), and one seed (``--lever-seeds``) of every lever row
    (:mod:`mmekd.apis.cifar100_reproduction`) with its nets alone, all runs
    at once (``--jobs``) to fill the GPU.

Every phase runs as a subprocess with a deadline; at the budget's end what
is still running is stopped and reported as unfinished. The compiled
benchmark runs last (its compilation time is unknown): the training runs get
the time before its reserve. ``<out>`` receives three files:
``evidence.md``, ``evidence.json`` and ``logs.tar.gz`` (every phase's log and
JSON, the runs' logs and generated configs).

``--data-root`` is checked first (files, shapes, classes, images per class);
a problem stops the run with a report that names what is missing.
``--dry-run`` runs the same phases at tiny scale on the CPU (a generated
fake CIFAR-100 unless ``--data-root`` is given): narrow nets, a few images,
one epoch, one seed, no AMP (CPU), ``--compile-backend eager``.

Example (GPU)::

    python tools/gpu_evidence.py --data-root /tmp/data/cifar100 --out $OUT \\
        --epochs 3
"""
import argparse
import json
import math
import os
import os.path as osp
import pickle
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from typing import Dict, List, Optional

import numpy as np

import mmekd  # noqa: F401  (mmpretrain:: bases, safe loading, as every tool)
from mmengine.config import Config

from mmekd.apis import cifar100_reproduction as reproduction
from mmekd.apis.comparison import collect_results
from mmekd.apis.comparison_report import (checks, markdown, records,
                                          summarise)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
CONFIGS = osp.join(ROOT, 'configs')

# The claim rows (every --seeds) and the lever rows (--lever-seeds); every
# row is trained with its nets alone.
CLAIM_ROWS = reproduction.ROW_GROUPS['claim']
LEVER_ROWS = reproduction.ROW_GROUPS['levers']
# Share of the budget each phase may take (the training runs get the rest
# before the compiled benchmark's reserve); seconds kept for the report.
PHASE_SHARE = dict(bench_cifar=0.14, bench_224=0.18, bench_epoch=0.14,
                   bench_cifar_compiled=0.18)
REPORT_RESERVE_S = 20
PHASES = ('bench_cifar', 'bench_224', 'bench_epoch', 'claims',
          'bench_cifar_compiled')
# Narrow nets for --dry-run (stage widths 4..32; 8..64 for channels_last).
TINY = ['model.backbone.stem_channels=4', 'model.backbone.base_channels=4',
        'model.head.in_channels=32']
TINY8 = ['model.backbone.stem_channels=8', 'model.backbone.base_channels=8',
         'model.head.in_channels=64']
VAL_PER_CLASS = 50
OUT_FILES = ('evidence.md', 'evidence.json', 'logs.tar.gz')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='GPU evidence of the DDNN-EKD claim: benchmarks and the '
        'CIFAR-100 claim rows in one budgeted run, one report')
    parser.add_argument(
        '--data-root',
        help="folder holding 'cifar-100-python/' (train, meta); required "
        'unless --dry-run')
    parser.add_argument('--out', required=True,
                        help=f'report folder (gets {list(OUT_FILES)})')
    parser.add_argument(
        '--work-dir',
        help='runs, checkpoints and logs (default: /tmp/gpu_evidence, or '
        '<out>/../gpu_evidence_work with --dry-run); reused runs are '
        'skipped (reproduce_cifar100 --skip-existing)')
    parser.add_argument(
        '--epochs',
        type=int,
        help='training epochs of every run, cosine schedule (default 3: '
        'the 17 runs at once estimated to fit the 11-minute budget with '
        'the benchmarks, docs/results_gpu_plan.md; 1 with --dry-run)')
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        help=f'seeds of the claim rows {list(CLAIM_ROWS)} (default 0 1 2; '
        '0 with --dry-run)')
    parser.add_argument('--lever-seeds', type=int, nargs='+', default=[0],
                        help=f'seeds of the lever rows {list(LEVER_ROWS)}')
    parser.add_argument(
        '--rows',
        nargs='+',
        default=list(CLAIM_ROWS + LEVER_ROWS),
        help='rows of part (c) (default: all claim and lever rows); rows '
        f'outside the claim rows {list(reproduction.HEADLINE_ROWS)} get '
        '--lever-seeds')
    parser.add_argument(
        '--skip',
        nargs='+',
        default=[],
        choices=PHASES,
        help='phases not to run (reported as skipped)')
    parser.add_argument(
        '--jobs',
        type=int,
        help='training runs at once (default: all of them)')
    parser.add_argument(
        '--budget-s',
        type=float,
        help='wall-time budget in seconds (default 570: inside the 11-minute '
        'target, with a margin under a 10-minute limit per command; 1800 '
        'with --dry-run, on a few CPU cores)')
    parser.add_argument(
        '--dry-run',
        action='store_true',
        help='the same phases at tiny scale on the CPU')
    args = parser.parse_args(argv)
    for row in args.rows:
        try:
            reproduction.row_config_path(CONFIGS, row)
        except ValueError as e:
            parser.error(f'--rows: {e}')
    if args.data_root is None and not args.dry_run:
        parser.error('--data-root is required (or --dry-run)')
    if args.epochs is None:
        args.epochs = 1 if args.dry_run else 3
    if args.epochs < 1:
        parser.error('--epochs must be >= 1')
    if args.jobs is not None and args.jobs < 1:
        parser.error('--jobs must be >= 1')
    if args.budget_s is None:
        args.budget_s = 1800.0 if args.dry_run else 570.0
    if not args.budget_s > 0:
        parser.error('--budget-s must be > 0')
    if args.seeds is None:
        args.seeds = [0] if args.dry_run else [0, 1, 2]
    if args.work_dir is None:
        args.work_dir = (osp.join(osp.dirname(osp.abspath(args.out)),
                                  'gpu_evidence_work')
                         if args.dry_run else '/tmp/gpu_evidence')
    return args


# ---------------------------------------------------------------------- #
# data
# ---------------------------------------------------------------------- #
def check_data(root: str, val_per_class: int = VAL_PER_CLASS) -> List[str]:
    """What keeps ``root`` from being the CIFAR-100 train split the claim
    runs need (empty: nothing; :func:`reproduction.check_data`)."""
    return reproduction.check_data(root, 'val', val_per_class)


def write_fake_cifar100(root: str, per_class: int) -> str:
    """A tiny CIFAR-100 train split of random pixels (``--dry-run``)."""
    folder = osp.join(root, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = [c for _ in range(per_class) for c in range(100)]
    data = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
    with open(osp.join(folder, 'train'), 'wb') as f:
        pickle.dump({'data': data, 'fine_labels': labels}, f)
    with open(osp.join(folder, 'meta'), 'wb') as f:
        pickle.dump({'fine_label_names': [f'c{c}' for c in range(100)]}, f)
    return root


# ---------------------------------------------------------------------- #
# phases
# ---------------------------------------------------------------------- #
def run_phase(cmd: List[str], log_path: str, timeout: float,
              env: Optional[Dict[str, str]] = None) -> dict:
    """Run ``cmd`` (its own process group, output to ``log_path``, ``env``
    added to the environment) for at most ``timeout`` seconds; stop the
    whole group after that."""
    start = time.monotonic()
    result = dict(command=' '.join(shlex.quote(c) for c in cmd),
                  log=osp.basename(log_path))
    if timeout < 1:
        return dict(result, status='skipped: no time left', seconds=0.0)
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                cwd=ROOT, start_new_session=True,
                                env=dict(os.environ, **(env or {})))
        try:
            rc = proc.wait(timeout=timeout)
            status = 'ok' if rc == 0 else f'failed (exit {rc})'
        except subprocess.TimeoutExpired:
            status = f'stopped at its deadline ({timeout:.0f} s)'
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, None)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=wait)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
    result.update(status=status, seconds=round(time.monotonic() - start, 1))
    if status != 'ok':
        with open(log_path, errors='replace') as f:
            result['log_tail'] = ''.join(f.readlines()[-15:])
    return result


def _read_json(path: str) -> Optional[dict]:
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def benchmark_train_cmds(args, work: str) -> Dict[str, List[str]]:
    """The three ``benchmark_train`` commands of part (a)."""
    tool = [sys.executable, osp.join(TOOLS, 'benchmark_train.py')]
    cifar = osp.join(CONFIGS, 'ddnn_r34_cifar100.py')
    imagenet = osp.join(CONFIGS, 'ddnn_r34_imagenet.py')
    common = ['--amp', '--amp-dtype', 'bfloat16']
    if args.dry_run:
        tiny = ['--device', 'cpu', '--steps', '1', '--warmup', '1',
                '--repeats', '1', '--cfg-options']
        sizes = dict(bench_cifar=['--batch-size', '2'],
                     bench_224=['--batch-size', '2', '--input-size', '64'])
        backend = ['--compile-backend', 'eager']
    else:
        tiny, backend = [], []
        sizes = dict(bench_cifar=['--batch-size', '128'],
                     bench_224=['--batch-size', '256', '--input-size',
                                '224'])

    def cmd(name, config, extra):
        # channels_last on the CPU (oneDNN) needs >= 8 channels before a
        # strided 1x1 convolution (mmekd/utils/onednn_fence.py).
        widths = TINY8 if '--channels-last' in extra else TINY
        return tool + [config, *common, *sizes[name.replace(
            '_compiled', '')], *extra, '--json',
            osp.join(work, f'{name}.json')] + (tiny + widths if tiny else [])

    return dict(
        bench_cifar=cmd('bench_cifar', cifar, []),
        bench_224=cmd('bench_224', imagenet, ['--channels-last']),
        bench_cifar_compiled=cmd('bench_cifar_compiled', cifar,
                                 ['--compile', *backend]))


def benchmark_epoch_cmd(args, work: str, data_root: str) -> List[str]:
    cmd = [sys.executable, osp.join(TOOLS, 'benchmark_epoch.py'),
           osp.join(CONFIGS, 'ddnn_r34_cifar100_fastdata.py'), '--json',
           osp.join(work, 'bench_epoch.json')]
    options = [f'train_dataloader.dataset.dataset.data_root={data_root}']
    if args.dry_run:
        # No AMP on the CPU; 200 images in batches of 32: 7 iterations.
        cmd += ['--warmup', '2', '--steps', '2']
        options += ['train_dataloader.dataset.dataset.val_per_class=1',
                    'train_dataloader.batch_size=32', *TINY]
    else:
        cmd += ['--amp']
        options += ['optim_wrapper.dtype=bfloat16']
    return cmd + ['--cfg-options', *options]


def row_seeds(args, row: str) -> List[int]:
    # As reproduce_cifar100 gives them (--seeds / --ablation-seeds).
    return (args.seeds if row in reproduction.HEADLINE_ROWS else
            args.lever_seeds)


def max_runs(args) -> int:
    """The runs of part (c) at most: every row's DDNN and nets alone, once
    per seed (nets alone that rows share run once: the plan has fewer).
    Read from the row configs, no model is built."""
    total = 0
    for row in args.rows:
        cfg = Config.fromfile(reproduction.row_config_path(CONFIGS, row))
        nets = 1 + len(cfg.model.backbone.get('sub_stage_blocks') or [])
        total += len(row_seeds(args, row)) * (1 + nets)
    return total


def claims_cmd(args, work: str, data_root: str) -> List[str]:
    """``reproduce_cifar100`` with every claim and lever row at once."""
    jobs = args.jobs or max_runs(args)
    cmd = [sys.executable, osp.join(TOOLS, 'reproduce_cifar100.py'),
           '--data-root', data_root, '--split', 'val', '--epochs',
           str(args.epochs), '--schedule', 'cosine', '--rows', *args.rows,
           '--seeds', *map(str, args.seeds), '--ablation-seeds',
           *map(str, args.lever_seeds), '--fast-data', '--jobs', str(jobs),
           '--work-dir', work, '--skip-existing']
    if args.dry_run:
        return cmd + ['--val-per-class', '1', '--batch-size', '32',
                      '--num-workers', '0', '--cfg-options', *TINY,
                      'val_dataloader.batch_size=100']
    return cmd + ['--amp', '--cfg-options', 'optim_wrapper.dtype=bfloat16',
                  'env_cfg.cudnn_benchmark=True']


def collect_claims(work: str) -> dict:
    """What the claim runs left in ``work`` (the plan reproduce_cifar100
    wrote and every finished run): ``planned``, ``finished``,
    ``unfinished`` (run names), ``records`` (one per net and seed), the
    rows' ``table`` and the ``goal`` check (:func:`goal_check`)."""
    plan, results, unfinished = collect_results(work)
    summaries = [summarise(c, results) for c in plan['comparisons']]
    return dict(planned=len(plan['runs']), finished=len(results),
                unfinished=unfinished, records=records(plan, results),
                table='\n\n'.join(markdown(s) for s in summaries),
                goal=goal_check(summaries))


def goal_check(summaries: List[dict]) -> List[dict]:
    """Every DDNN row's nets against the same nets alone (mean top-1 over
    the seeds, difference paired by seed). Goal: a sub-net >= alone + 1.0,
    the full net >= alone."""
    return checks(summaries, full_target=0.0, sub_target=1.0)


# ---------------------------------------------------------------------- #
# report
# ---------------------------------------------------------------------- #
def _num(v, spec='.1f') -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return 'n/a'
    return format(v, spec)


def _bench_train_md(name: str, res: dict) -> List[str]:
    s = res['summary']
    lines = [
        f"**{name}**: `{osp.relpath(res['config'], ROOT)}`, batch "
        f"{res['batch_size']}, {res['input_size']}², amp {res['amp']}, "
        f"channels_last {res['channels_last']}, compile {res['compile']}, "
        f"{res['repeats']} x {res['steps']} steps (median), device "
        f"{res['device']}, bf16 dense peak "
        f"{_num(res['bf16_peak_tflops'])} TFLOP/s", '',
        '| model | step ms | img/s | TFLOP/s | share of bf16 peak | CUDA '
        'peak MB |', '|---|---|---|---|---|---|'
    ]
    for model, r in res['rows'].items():
        share = r.get('peak_share')
        lines.append(
            f"| {model} | {_num(r['step_ms'], '.2f')} | "
            f"{_num(r['img_per_s'])} | {_num(r['tflop_per_s'], '.2f')} | "
            f"{'n/a' if share is None else format(share, '.1%')} | "
            f"{_num(r.get('cuda_peak_mb'))} |")
    lines += ['', '| ratio (DDNN step / nets alone) | memory_efficient | '
              'simple |', '|---|---|---|']
    suffixes = [''] + (['_compiled'] if res['compile'] else [])
    for suffix in suffixes:
        tag = ' (compiled)' if suffix else ''
        for what, key in (('step time / sum of the nets alone',
                           'step_ratio'),
                          ('CUDA peak / full net alone', 'cuda_peak_ratio'),
                          ('saved activations / full net alone',
                           'saved_activations_ratio')):
            eff, simple = (s.get(f'{key}_{mode}{suffix}')
                           for mode in ('memory_efficient', 'simple'))
            lines.append(f"| {what}{tag} | {_num(eff, '.3f')} | "
                         f"{_num(simple, '.3f')} |")
    if res['compile']:
        eff, simple = (s.get(f'compiled_vs_eager_{mode}')
                       for mode in ('memory_efficient', 'simple'))
        lines.append(f"| compiled / eager step time | {_num(eff, '.3f')} | "
                     f"{_num(simple, '.3f')} |")
        lines += ['', '| compiled model | warm-up s | graphs | graph breaks '
                  '| recompiles |', '|---|---|---|---|---|']
        for model, r in res['rows'].items():
            if r.get('compiled'):
                lines.append(f"| {model} | {_num(r['warmup_s'])} | "
                             f"{r['graphs']} | {r['graph_breaks']} | "
                             f"{r['recompiles']} |")
    return lines + ['']


def render_markdown(report: dict) -> str:
    lines = [
        '# GPU evidence: DDNN + EKD on CIFAR-100', '',
        f"Command: `{report['command']}`", '',
        f"Started {report['started']}; wall time {report['wall_s']:.0f} s of "
        f"a {report['budget_s']:.0f} s budget. Device: {report['device']}. "
        f"torch {report['torch']}. Training runs: {report['epochs']} "
        f"epoch{'s' if report['epochs'] > 1 else ''} "
        + ('(cosine), batch 128, val split (45,000 / 5,000, last 50 images '
           'of every class held out), fast data path, bf16 autocast.'
           if not report['dry_run'] else
           '(cosine), batch 32, 2 training and 1 val image per class of a '
           'fake CIFAR-100, nets 4-32 channels wide (8-64 channels_last), '
           'float32. DRY RUN on the CPU: the numbers say nothing about the '
           'method.'), '',
        '## Phases', '', '| phase | status | seconds |', '|---|---|---|'
    ]
    for name, p in report['phases'].items():
        lines.append(f"| {name} | {p['status']} | {p['seconds']} |")
    for name, p in report['phases'].items():
        if 'log_tail' in p:
            lines += ['', f'{name} log tail:', '```', p['log_tail'].rstrip(),
                      '```']
    if report['data_problems']:
        lines += ['', '## Data problems (nothing was run)', ''] + [
            f'- {p}' for p in report['data_problems']]
    lines += ['', '## (a) Training step: DDNN against the nets alone', '']
    for name in ('bench_cifar', 'bench_cifar_compiled', 'bench_224'):
        res = report['benchmarks'].get(name)
        lines += (_bench_train_md(name, res) if res else
                  [f'**{name}**: no result', ''])
    lines += ['## (b) Real epoch against the synthetic step', '']
    ep = report['benchmarks'].get('bench_epoch')
    if ep:
        lines += ['| real img/s | synthetic img/s | real / synthetic | '
                  'iterations | epoch s |', '|---|---|---|---|---|',
                  f"| {ep['real_img_s']} | {ep['synthetic_img_s']} | "
                  f"{ep['epoch_vs_synthetic']} | {ep['iterations']} | "
                  f"{ep['epoch_wall_s']} |"]
    else:
        lines.append('no result')
    c = report['claims']
    lines += ['', '## (c) Claim rows, val split', '',
              f"Planned runs: {c['planned']}; finished: {c['finished']}."]
    if c['unfinished']:
        lines.append(f"Unfinished: {', '.join(c['unfinished'])}.")
    if c.get('error'):
        lines.append(f"Reading the runs' metrics failed: {c['error']}.")
    if c['table']:
        lines += ['', c['table']]
    if c['goal']:
        lines += ['', 'Goal (mean top-1 over the seeds of each row): every '
                  'sub-net >= the same net alone + 1.0, the full net >= '
                  'the full net alone (reproduce_cifar100\'s claim check '
                  'keeps the earlier full-net target, -0.3).', '',
                  '| row | net | architecture | top-1 | seeds | alone | '
                  'alone seeds | delta | target | met |',
                  '|---|---|---|---|---|---|---|---|---|---|']
        for g in c['goal']:
            lines.append(
                f"| {g['row']} | {g['net']} | {g['arch']} | {g['top1']:.2f}"
                f" | {g['seeds']} | {g['alone_top1']:.2f} | "
                f"{g['alone_seeds']} | {g['delta']:+.2f} | "
                f"{g['target']:+.1f} | {'yes' if g['met'] else 'NO'} |")
    lines += ['', f"Files: {', '.join(OUT_FILES)} (logs.tar.gz: every "
              "phase's log and JSON, each run's logs and config)."]
    return '\n'.join(lines) + '\n'


def write_report(out: str, work: str, report: dict) -> None:
    """``evidence.md``, ``evidence.json`` and ``logs.tar.gz`` in ``out``."""
    os.makedirs(out, exist_ok=True)
    with open(osp.join(out, 'evidence.json'), 'w') as f:
        json.dump(report, f, indent=1)
    with open(osp.join(out, 'evidence.md'), 'w') as f:
        f.write(render_markdown(report))
    with tarfile.open(osp.join(out, 'logs.tar.gz'), 'w:gz') as tar:
        for folder, _, files in os.walk(work):
            for name in sorted(files):
                if name.endswith(('.log', '.json', '.py', '.md', '.csv')):
                    path = osp.join(folder, name)
                    tar.add(path, arcname=osp.relpath(path, work))


def main(argv=None) -> dict:
    start = time.monotonic()
    args = parse_args(argv)
    deadline = start + args.budget_s - REPORT_RESERVE_S
    work = osp.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    import torch
    report = dict(
        command=' '.join(['python', 'tools/gpu_evidence.py'] +
                         [shlex.quote(a) for a in (argv if argv is not None
                                                   else sys.argv[1:])]),
        started=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
        budget_s=args.budget_s, epochs=args.epochs, dry_run=args.dry_run,
        torch=torch.__version__,
        device=(torch.cuda.get_device_name(0)
                if torch.cuda.is_available() else 'cpu'),
        seeds=args.seeds,
        lever_seeds=args.lever_seeds, phases={}, benchmarks={},
        data_problems=[],
        claims=dict(planned=max_runs(args), finished=0,
                    unfinished=[], table='', goal=[], records=[]))
    data_root = args.data_root
    if data_root is None:  # --dry-run
        data_root = write_fake_cifar100(osp.join(work, 'fake_cifar100'), 3)
    data_root = osp.abspath(data_root)
    report['data_root'] = data_root
    report['data_problems'] = check_data(
        data_root, 1 if args.dry_run else VAL_PER_CLASS)
    if report['data_problems']:
        report['wall_s'] = time.monotonic() - start
        write_report(args.out, work, report)
        raise SystemExit('data problems:\n' + '\n'.join(
            f'- {p}' for p in report['data_problems']))

    def phase(name, cmd, share=None, reserve=0.0, env=None):
        if name in args.skip:
            report['phases'][name] = dict(status='skipped (--skip)',
                                          seconds=0.0)
            return
        left = deadline - time.monotonic() - reserve
        timeout = left if share is None else min(left,
                                                 share * args.budget_s)
        print(f'[gpu_evidence] {name} (at most {max(timeout, 0):.0f} s)...',
              flush=True)
        report['phases'][name] = run_phase(
            cmd, osp.join(work, f'{name}.log'), timeout, env)
        print(f"[gpu_evidence] {name}: {report['phases'][name]['status']}",
              flush=True)

    bench = benchmark_train_cmds(args, work)
    phase('bench_cifar', bench['bench_cifar'], PHASE_SHARE['bench_cifar'])
    phase('bench_224', bench['bench_224'], PHASE_SHARE['bench_224'])
    phase('bench_epoch', benchmark_epoch_cmd(args, work, data_root),
          PHASE_SHARE['bench_epoch'])
    # One folder per epoch count: --skip-existing reuses finished runs of
    # the same recipe only.
    claims_work = osp.join(work, f'claims_{args.epochs}e')
    # Concurrent runs do little CPU work each (batches from memory, augmented
    # on the device): share the cores instead of 16 threads per process.
    jobs = args.jobs or max_runs(args)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    compiled = 'bench_cifar_compiled' not in args.skip
    phase('claims', claims_cmd(args, claims_work, data_root),
          reserve=compiled * PHASE_SHARE['bench_cifar_compiled'] *
          args.budget_s,
          env=dict(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads))
    phase('bench_cifar_compiled', bench['bench_cifar_compiled'])

    for name in ('bench_cifar', 'bench_224', 'bench_cifar_compiled',
                 'bench_epoch'):
        res = _read_json(osp.join(work, f'{name}.json'))
        if res is not None and report['phases'][name]['status'] == 'ok':
            report['benchmarks'][name] = res
    try:
        report['claims'].update(collect_claims(claims_work))
    except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
        # A run's metrics without the expected keys: report, don't lose the
        # benchmarks.
        report['claims']['error'] = f'{type(e).__name__}: {e}'
    report['wall_s'] = time.monotonic() - start
    write_report(args.out, work, report)
    print(render_markdown(report))
    failed = [n for n, p in report['phases'].items()
              if p['status'] not in ('ok', 'skipped (--skip)')]
    if failed:
        raise SystemExit(f'phases not ok: {failed}; see {args.out}')
    return report


if __name__ == '__main__':
    main()

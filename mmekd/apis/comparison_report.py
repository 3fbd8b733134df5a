# Copyright (c) mmekd contributors. All rights reserved.
"""The report of a comparison (:mod:`mmekd.apis.comparison`): per net, its
top-1/top-5 in the DDNN and alone, their difference (mean ± std over the
seeds, paired by seed), params and FLOPs, and the DDNN run's wall time
against the sum of the runs alone; as a dict (JSON), a markdown table, a
plot, CSV records and checks against targets.

Example::

    plan, results, unfinished = collect_results(work_dir)
    summary = summarise(plan['comparisons'][0], results)
    print(markdown(summary))
    write_report(summary, work_dir)  # compare.md, compare.json, compare.png
"""
import csv
import json
import math
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence

from mmekd.visualization import PlotSeries, plot_accuracy_vs_flops

TOPK = (1, 5)


def mean_std(values: Sequence[float]) -> Optional[dict]:
    """``{'mean', 'std', 'n'}`` of ``values`` (std 0 for one value), or
    None for none."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return dict(mean=statistics.mean(values), std=std, n=len(values))


def _metric(result: Optional[dict], key: str) -> Optional[float]:
    if result is None:
        return None
    value = result['metrics'].get(key)
    return None if value is None else float(value)


def _or_nan(value: Optional[float]) -> float:
    return float('nan') if value is None else value


def _recal(result: Optional[dict], net: str) -> Optional[float]:
    if result is None or net not in result['recal']:
        return None
    return float(result['recal'][net][f'{net}/top1'])


def summarise(comparison: dict, results: Dict[str, dict]) -> dict:
    """The numbers of one comparison.

    Args:
        comparison (dict): Its entry in ``plan.json``
            (:meth:`Comparison.to_dict`).
        results (dict): Run name -> :func:`read_run` (missing: unfinished).

    Returns:
        dict: ``name``, ``config``, ``seeds``; ``nets`` (per net: ``net``,
        ``arch``, ``blocks``, ``params``, ``flops``, ``input_size``,
        ``ddnn``/``alone``/``diff`` with per-seed lists ``top1``, ``top5``
        (None where missing) and their :func:`mean_std` as ``top1_stats``
        ...; ``ddnn.top1_recal`` with re-estimated BatchNorm statistics);
        ``time`` (per seed ``ddnn_s`` and ``alone_s``, the sum over the
        nets alone, and ``ratio`` = mean DDNN / mean sum alone).
    """
    name, seeds = comparison['name'], comparison['seeds']
    ddnn = [results.get(f'{name}/seed{s}') for s in seeds]
    nets = []
    for n in comparison['nets']:
        alone = [results.get(f"{n['alone_dir']}/seed{s}") for s in seeds]
        row = dict(n, ddnn={}, alone={}, diff={})
        for k in TOPK:
            d = [_metric(r, f"{n['net']}/top{k}") for r in ddnn]
            a = [_metric(r, f'accuracy/top{k}') for r in alone]
            diff = [x - y if x is not None and y is not None else None
                    for x, y in zip(d, a)]
            for side, values in (('ddnn', d), ('alone', a), ('diff', diff)):
                row[side][f'top{k}'] = values
                row[side][f'top{k}_stats'] = mean_std(values)
        recal = [_recal(r, n['net']) for r in ddnn]
        row['ddnn']['top1_recal'] = recal
        row['ddnn']['top1_recal_stats'] = mean_std(recal)
        row['alone']['train_s'] = [r and r['train_s'] for r in alone]
        nets.append(row)
    ddnn_s = [r and r['train_s'] for r in ddnn]
    alone_s = []
    for i in range(len(seeds)):
        times = [n['alone']['train_s'][i] for n in nets]
        alone_s.append(None if None in times else sum(times))
    d, a = mean_std(ddnn_s), mean_std(alone_s)
    return dict(
        name=name, config=comparison.get('config'), seeds=seeds, nets=nets,
        time=dict(ddnn_s=ddnn_s, alone_s=alone_s, ddnn_stats=d,
                  alone_stats=a,
                  ratio=d['mean'] / a['mean'] if d and a else None))


def _fmt(stats: Optional[dict], sign: bool = False) -> str:
    if stats is None:
        return '–'
    spec = '+.2f' if sign else '.2f'
    text = format(stats['mean'], spec)
    return text + (f" ± {stats['std']:.2f}" if stats['n'] > 1 else '')


def _flops_unit(nets: List[dict]) -> tuple:
    return ('G', 1e9) if max(n['flops'] for n in nets) >= 1e8 else ('M', 1e6)


def markdown(summary: dict) -> str:
    """The table of :func:`summarise`, then the wall-time line."""
    nets = summary['nets']
    unit, scale = _flops_unit(nets)
    ks = [k for k in TOPK if any(n['ddnn'][f'top{k}_stats'] or
                                 n['alone'][f'top{k}_stats'] for n in nets)]
    recal = any(n['ddnn']['top1_recal_stats'] for n in nets)
    header = ['net', 'architecture', 'blocks per stage', 'params (M)',
              f'FLOPs ({unit})']
    for k in ks:
        header += [f'top-{k} DDNN', f'top-{k} alone', f'top-{k} difference']
    if recal:
        header.append('top-1 DDNN, BN re-estimated')
    lines = [f"**{summary['name']}**, seeds {summary['seeds']} (accuracy "
             'in %, mean ± std over the seeds; difference = DDNN - alone, '
             'paired by seed)', '',
             '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for n in nets:
        cells = [n['net'], n['arch'], str(n['blocks']).replace(' ', ''),
                 f"{n['params'] / 1e6:.2f}", f"{n['flops'] / scale:.3f}"]
        for k in ks:
            cells += [_fmt(n['ddnn'][f'top{k}_stats']),
                      _fmt(n['alone'][f'top{k}_stats']),
                      _fmt(n['diff'][f'top{k}_stats'], sign=True)]
        if recal:
            cells.append(_fmt(n['ddnn']['top1_recal_stats']))
        lines.append('| ' + ' | '.join(cells) + ' |')
    t = summary['time']
    if t['ddnn_stats'] or t['alone_stats']:
        d = t['ddnn_stats'] and f"{t['ddnn_stats']['mean']:.0f} s"
        a = t['alone_stats'] and f"{t['alone_stats']['mean']:.0f} s"
        lines += ['', f"Training wall time (mean over the seeds): DDNN "
                  f"{d or '–'}; the nets alone {a or '–'} in all"
                  + (f", DDNN / sum alone = {t['ratio']:.2f}"
                     if t['ratio'] is not None else '') + '.']
    return '\n'.join(lines)


def plot(summary: dict, path: str) -> None:
    """Mean top-1 against FLOPs: the DDNN's nets (joined) and the same nets
    alone (hollow squares)."""
    ddnn, alone = [], []
    for n in summary['nets']:
        d, a = n['ddnn']['top1_stats'], n['alone']['top1_stats']
        if d:
            ddnn.append((n['flops'], d['mean'],
                         f"{n['net']} ({n['arch']}): {d['mean']:.2f}"))
        if a:
            alone.append((n['flops'], a['mean'],
                          f"{n['arch']} alone: {a['mean']:.2f}"))
    plot_accuracy_vs_flops(
        [PlotSeries('nets in the DDNN', ddnn),
         PlotSeries('nets alone', alone, marker='s', line=False,
                    filled=False)], path,
        f"{summary['name']}: top-1 vs FLOPs, mean over seeds "
        f"{summary['seeds']}")


def write_report(summary: dict, out_dir: str, stem: str = 'compare') -> list:
    """``<stem>.md``, ``<stem>.json`` and (with any top-1) ``<stem>.png``
    in ``out_dir``; returns their paths."""
    paths = [osp.join(out_dir, f'{stem}.{ext}') for ext in ('md', 'json')]
    with open(paths[0], 'w') as f:
        f.write(markdown(summary) + '\n')
    with open(paths[1], 'w') as f:
        json.dump(summary, f, indent=1)
    if any(n['ddnn']['top1_stats'] or n['alone']['top1_stats']
           for n in summary['nets']):
        paths.append(osp.join(out_dir, f'{stem}.png'))
        plot(summary, paths[-1])
    return paths


def records(plan: dict, results: Dict[str, dict]) -> List[dict]:
    """One record per net and seed of every finished run: ``row`` (the
    comparison, or ``'alone'``), ``net`` (``'alone'`` for a net alone),
    ``arch``, ``blocks``, ``seed``, ``top1``, ``top5``, ``top1_recal``,
    ``train_s``."""
    out, alone_seen = [], set()
    for c in plan['comparisons']:
        for s in c['seeds']:
            r = results.get(f"{c['name']}/seed{s}")
            for n in c['nets']:
                if r is not None:
                    out.append(dict(
                        row=c['name'], net=n['net'], arch=n['arch'],
                        blocks=n['blocks'], seed=s,
                        top1=_metric(r, f"{n['net']}/top1"),
                        top5=_or_nan(_metric(r, f"{n['net']}/top5")),
                        top1_recal=_or_nan(_recal(r, n['net'])),
                        train_s=r['train_s']))
                key = f"{n['alone_dir']}/seed{s}"
                a = results.get(key)
                if a is not None and key not in alone_seen:
                    alone_seen.add(key)
                    out.append(dict(
                        row='alone', net='alone', arch=n['arch'],
                        blocks=n['blocks'], seed=s,
                        top1=_metric(a, 'accuracy/top1'),
                        top5=_or_nan(_metric(a, 'accuracy/top5')),
                        top1_recal=float('nan'), train_s=a['train_s']))
    return out


def write_records(rows: List[dict], path: str) -> None:
    """:func:`records` as CSV."""
    fields = ['row', 'net', 'arch', 'blocks', 'seed', 'top1', 'top5',
              'top1_recal', 'train_s']
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow(dict(r, blocks=' '.join(map(str, r['blocks']))))


def checks(summaries: Sequence[dict], full_target: float,
           sub_target: float, recalibrated: bool = False) -> List[dict]:
    """Every net of every summary against the same net alone: the mean
    paired difference of top-1 and whether it reaches the target
    (``full_target`` for the full net, ``sub_target`` for a sub-net).

    Args:
        recalibrated (bool): Judge the DDNN nets tested with re-estimated
            BatchNorm statistics (their alone counterparts as they are).

    Returns:
        list[dict]: ``row``, ``net``, ``arch``, ``top1``, ``seeds``,
        ``alone_top1``, ``alone_seeds``, ``delta``, ``target``, ``met``;
        nets without both numbers are left out.
    """
    out = []
    for s in summaries:
        for n in s['nets']:
            ddnn = n['ddnn']['top1_recal' if recalibrated else 'top1']
            pairs = [(d, a) for d, a in zip(ddnn, n['alone']['top1'])
                     if d is not None and a is not None]
            d, a = mean_std(ddnn), n['alone']['top1_stats']
            if not pairs or d is None or a is None:
                continue
            delta = statistics.mean(x - y for x, y in pairs)
            target = full_target if n['net'] == 'full' else sub_target
            out.append(dict(row=s['name'], net=n['net'], arch=n['arch'],
                            top1=round(d['mean'], 2), seeds=d['n'],
                            alone_top1=round(a['mean'], 2),
                            alone_seeds=a['n'], delta=round(delta, 2),
                            target=target, met=bool(delta >= target)))
    return out

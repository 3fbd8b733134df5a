# Copyright (c) mmekd contributors. All rights reserved.
"""Params, FLOPs and (given test results) top-1 of every net of a DDNN
config; writes a markdown table, a CSV and (with ``--results``) a PNG of
top-1 vs FLOPs, on an accuracy axis that spans the results (its range in
the axis label), every point labelled with its value.

    python tools/test.py CONFIG CKPT --out results.json --out-item metrics
    python tools/analysis/subnet_costs.py CONFIG --results results.json

FLOPs are counted on each exported single-net model (what is deployed), with
MMPretrain's convention: backbone + neck (``extract_feat``) for one image;
parameters include the classifier.
"""
import argparse
import csv
import json
import os
import os.path as osp
from typing import Dict, List, Optional

import mmekd  # noqa: F401
from mmekd.apis import load_ddnn_model, net_costs
from mmekd.evaluation.net_table import per_net_metrics
from mmekd.utils import (atomic_output, atomic_write,
                         check_outputs_not_inputs)
from mmekd.utils.cli import add_cfg_options, read_config, tool_main
from mmekd.visualization import PlotSeries, plot_accuracy_vs_flops


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Params / FLOPs / accuracy of every net of a DDNN model')
    parser.add_argument('config', help='DDNN config file')
    parser.add_argument(
        'checkpoint', nargs='?', help='checkpoint (optional: costs do not '
        'depend on weights; given, it is checked against the config)')
    parser.add_argument(
        '--results',
        help='metrics JSON of tools/test.py (--out X.json --out-item '
        'metrics) with <net>/top1 keys. Only JSON is read: a pickle (.pkl) '
        'is refused, since unpickling a file can run code')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        help='input H [W] (default: from the test pipeline; 224 ImageNet, '
        '32 CIFAR)')
    parser.add_argument(
        '--out-dir',
        help='where to write <config>_costs.{md,csv,png} (default: '
        'work_dirs/subnet_costs)')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def load_results(path: Optional[str]) -> Dict[str, Dict[int, float]]:
    """``{net: {k: top-k}}`` from a metrics JSON file (read as JSON data,
    whatever its name; nothing else is accepted)."""
    if path is None:
        return {}
    try:
        with open(path, encoding='utf-8') as f:
            metrics = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(
            f'--results: {path} is not a JSON file ({type(e).__name__}). '
            'Only JSON is read (a pickle could run code when loaded): write '
            'it with tools/test.py CONFIG CKPT --out results.json '
            '--out-item metrics') from None
    if not isinstance(metrics, dict):
        raise SystemExit(f'--results: {path} must hold a JSON object of '
                         f'metrics, got {type(metrics).__name__}')
    results = per_net_metrics(metrics)
    if not results:
        raise SystemExit(f'{path} has no <net>/top<k> metrics; write it with '
                         'tools/test.py --out X.json --out-item metrics')
    return results


def format_rows(rows: List[dict], results: dict) -> List[dict]:
    """Table rows (strings) in the order of ``rows``."""
    ks = sorted({k for accs in results.values() for k in accs})
    table = []
    for r in rows:
        row = {
            'net': r['net'],
            'arch': r['arch'],
            'blocks per stage': str(r['blocks']),
            'exported backbone': r['plain_type'],
            'input': 'x'.join(str(s) for s in r['input_size']),
            'Params (M)': f'{r["params"] / 1e6:.2f}',
            'FLOPs (G)': f'{r["flops"] / 1e9:.3f}',
        }
        for k in ks:
            acc = results.get(r['net'], {}).get(k)
            row[f'top-{k} (%)'] = '-' if acc is None else f'{acc:.2f}'
        table.append(row)
    return table


def markdown(table: List[dict]) -> str:
    header = list(table[0])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(row[h] for h in header) + ' |'
              for row in table]
    return '\n'.join(lines)


def plot(rows: List[dict], results: dict, title: str, path: str) -> tuple:
    """Write top-1 vs FLOPs as a PNG (:func:`plot_accuracy_vs_flops`: an
    accuracy axis that spans the data, labels that do not collide).

    Returns:
        tuple: The (bottom, top) limits of the accuracy axis.
    """
    points = [(r['flops'], results[r['net']][1],
               f'{r["net"]} ({r["arch"]}): {results[r["net"]][1]:.2f}')
              for r in rows if 1 in results.get(r['net'], {})]
    return plot_accuracy_vs_flops([PlotSeries('nets', points)], path,
                                  title)['ylim']


@tool_main
def main(argv=None):
    args = parse_args(argv)
    name = osp.splitext(osp.basename(args.config))[0]
    out_dir = args.out_dir or osp.join('work_dirs', 'subnet_costs')
    stem = osp.join(out_dir, f'{name}_costs')
    check_outputs_not_inputs(
        {ext: stem + ext for ext in ('.md', '.csv', '.png')},
        dict(config=args.config, checkpoint=args.checkpoint,
             results=args.results))
    cfg = read_config(args.config, args.cfg_options)
    model = load_ddnn_model(cfg, args.checkpoint)
    shape = None
    if args.shape:
        shape = (args.shape[0], args.shape[-1])
    rows = net_costs(cfg, model, shape)
    results = load_results(args.results)
    unknown = sorted(set(results) - {r['net'] for r in rows})
    if unknown:
        raise SystemExit(f'{args.results} has nets {unknown} that '
                         f'{args.config} does not have')
    table = format_rows(rows, results)
    os.makedirs(out_dir, exist_ok=True)
    md = markdown(table)
    atomic_write(stem + '.md', md + '\n')
    with atomic_output(stem + '.csv') as tmp, open(tmp, 'w',
                                                   newline='') as f:
        writer = csv.DictWriter(
            f, fieldnames=['net', 'arch', 'blocks', 'plain_type', 'height',
                           'width', 'params', 'flops'] +
            [f'top{k}' for k in sorted({k for a in results.values()
                                        for k in a})])
        writer.writeheader()
        for r in rows:
            writer.writerow(dict(
                net=r['net'], arch=r['arch'],
                blocks=' '.join(map(str, r['blocks'])),
                plain_type=r['plain_type'], height=r['input_size'][0],
                width=r['input_size'][1], params=r['params'],
                flops=r['flops'],
                **{
                    f'top{k}': v
                    for k, v in results.get(r['net'], {}).items()
                }))
    print(md)
    written = [stem + '.md', stem + '.csv']
    if results:
        with atomic_output(stem + '.png') as tmp:
            plot(rows, results, f'{name}: top-1 vs FLOPs', tmp)
        written.append(stem + '.png')
    print('\nwritten: ' + ', '.join(written))
    if not results:
        print('no PNG written: the top-1 vs FLOPs plot needs accuracies; '
              'pass --results X.json, written by tools/test.py CONFIG CKPT '
              '--out X.json --out-item metrics')


if __name__ == '__main__':
    main()

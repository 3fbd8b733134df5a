# Copyright (c) mmekd contributors. All rights reserved.
"""The per-net results table printed by tools/train.py and tools/test.py."""
import re
from typing import Dict, Optional

import torch.nn as nn

from mmekd.vocabulary import unwrap_model

_NET_KEY = re.compile(
    r'^(?:(?P<prefix>.+)/)?(?P<net>full|sub\d+)/top(?P<k>\d+)$')


def per_net_metrics(metrics: Dict[str, float]) -> Dict[str, Dict[int, float]]:
    """``{'full/top1': 70.1, 'sub0/top5': ...}`` -> ``{net: {k: acc}}``."""
    table = {}
    for key, value in metrics.items():
        m = _NET_KEY.match(key)
        if m:
            table.setdefault(m['net'], {})[int(m['k'])] = float(value)
    return table


def format_net_table(metrics: Dict[str, float],
                     model: Optional[nn.Module] = None) -> str:
    """A markdown table with one row per net: blocks per stage and top-k.

    Args:
        metrics (dict): Evaluation results with ``<net>/top<k>`` keys.
        model (nn.Module, optional): The DDNN model (or its DDP wrapper), to
            show each net's blocks per stage.

    Returns:
        str: The table, or an empty string when ``metrics`` has no per-net
        key.
    """
    table = per_net_metrics(metrics)
    if not table:
        return ''
    ks = sorted({k for accs in table.values() for k in accs})
    if model is not None:
        model = unwrap_model(model)
    backbone = getattr(model, 'backbone', None)
    header = ['net', 'blocks per stage'] + [f'top-{k} (%)' for k in ks]
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    order = sorted(table, key=lambda n: (n != 'full', len(n), n))
    for net in order:
        blocks = '-'
        if backbone is not None and hasattr(backbone, 'blocks_per_stage'):
            blocks = str(backbone.blocks_per_stage(net))
        accs = [f'{table[net][k]:.2f}' if k in table[net] else '-'
                for k in ks]
        lines.append('| ' + ' | '.join([net, blocks] + accs) + ' |')
    return '\n'.join(lines)

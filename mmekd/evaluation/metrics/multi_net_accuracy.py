# Copyright (c) mmekd contributors. All rights reserved.
from typing import List, Optional, Sequence, Union

import torch
from mmengine.evaluator import BaseMetric
from mmpretrain.evaluation import Accuracy

from mmekd.registry import METRICS


@METRICS.register_module()
class MultiNetAccuracy(BaseMetric):
    """Top-k accuracy of every net of a depth-dynamic model, in one pass.

    Reads the ``net_scores`` and ``net_names`` that
    :class:`mmekd.DDNNClassifier` stores on each data sample and reports
    ``<net>/top<k>`` (e.g. ``full/top1``, ``sub0/top1``, ``sub0/top5``).

    Args:
        topk (int | Sequence[int]): Top-k accuracies to report.
            Defaults to ``(1, )``.
        collect_device (str): ``'cpu'`` or ``'gpu'``. Defaults to ``'cpu'``.
        prefix (str, optional): Prefix put before the net name
            (``'<prefix>/<net>/top1'``). Defaults to None.
    """
    # Keys are '<net>/top<k>' already; '' (not None) means no prefix.
    default_prefix: Optional[str] = ''

    def __init__(self,
                 topk: Union[int, Sequence[int]] = (1, ),
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = (topk, ) if isinstance(topk, int) else tuple(topk)
        if not self.topk or any(
                not isinstance(k, int) or k < 1 for k in self.topk):
            raise ValueError(f'topk must be positive integers, got {topk!r}')

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if 'net_scores' not in sample:
                raise KeyError(
                    'MultiNetAccuracy needs per-net scores on the data '
                    "samples ('net_scores'): use mmekd.DDNNClassifier with "
                    'eval_all_nets=True')
            self.results.append(
                dict(
                    net_names=tuple(sample['net_names']),
                    scores=sample['net_scores'].cpu(),
                    label=sample['gt_label'].cpu()))

    def compute_metrics(self, results: List[dict]) -> dict:
        names = results[0]['net_names']
        if any(r['net_names'] != names for r in results):
            raise ValueError('MultiNetAccuracy got samples scored by '
                             'different sets of nets; evaluate one model '
                             'at a time')
        scores = torch.stack([r['scores'] for r in results])  # (N, nets, C)
        labels = torch.cat([r['label'] for r in results])
        metrics = dict()
        for i, name in enumerate(names):
            # One list per k, one value per threshold (a single 0.0 here).
            accs = Accuracy.calculate(scores[:, i], labels, topk=self.topk)
            for k, acc in zip(self.topk, accs):
                metrics[f'{name}/top{k}'] = acc[0].item()
        return metrics

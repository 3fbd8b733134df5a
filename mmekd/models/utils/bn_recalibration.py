# Copyright (c) mmekd contributors. All rights reserved.
"""BatchNorm re-calibration: recompute a net's BatchNorm statistics.

With BatchNorm shared by all nets (``private_norm=False``), the running
statistics a DDNN checkpoint stores are those the full net and every sub-net
produced in turn during training: a mixture that fits none of them exactly.
A sub-net gets its own statistics back by running a few training batches
through it in train mode with a cumulative average (``momentum=None``), as in
slimmable networks.

The batches are prepared as in training, augmentation included: the network
was trained on batch statistics of augmented images, and the statistics it
is tested with must be those (measurements: ``docs/results.md``).
"""
import itertools
import warnings
from typing import Iterable, Optional

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmekd.utils.numbers import config_int
from mmekd.vocabulary import check_net_name, is_ddnn, unwrap_model


def _bn_state(m: _BatchNorm) -> dict:
    return dict(
        running_mean=m.running_mean.clone(),
        running_var=m.running_var.clone(),
        num_batches_tracked=m.num_batches_tracked.clone(),
        momentum=m.momentum,
        training=m.training)


@torch.no_grad()
def recalibrate_bn(model: nn.Module,
                   dataloader: Iterable,
                   num_batches: int,
                   net: Optional[str] = None) -> int:
    """Recompute the BatchNorm running statistics of one net, in place.

    Every BatchNorm the net runs through is reset and then accumulates the
    exact average of the batch statistics of ``num_batches`` batches
    (``momentum=None``), in train mode and without gradients. The data
    preprocessor runs in training mode, so augmentation done there (e.g.
    :class:`mmekd.GPUAugmentPreprocessor`, batch augments) applies, as in
    the dataset pipeline of a training dataloader. BatchNorms
    the net does not use keep their statistics (e.g. the full net's own
    copies with ``private_norm=True``, or blocks the sub-net skips). Weights
    are not changed; the model is left in eval mode.

    With shared BatchNorm the recalibrated statistics replace the shared ones,
    so the other nets of the model lose theirs: recalibrate a copy per net
    (``copy.deepcopy(model)``) to evaluate several.

    A dataloader shorter than ``num_batches`` is used whole, with a warning
    that gives both counts; the return value is the count actually used, for
    callers to record.

    Args:
        model (nn.Module): A classifier with a ``data_preprocessor``: a
            :class:`mmekd.DDNNClassifier` (``net`` selects the net) or any
            MMPretrain classifier (``net`` must be None).
        dataloader (Iterable): Yields data batches as MMEngine dataloaders
            do (dicts with ``inputs`` and ``data_samples``), usually the
            config's ``train_dataloader``.
        num_batches (int): Batches to average over, ``>= 1``; at most one
            pass over ``dataloader`` is made.
        net (str, optional): The net of a DDNN model. Defaults to its
            ``predict_net``.

    Returns:
        int: The number of batches the statistics were averaged over:
        ``num_batches``, or fewer when the dataloader ran out first.
    """
    config_int(num_batches, 'num_batches', minimum=1)
    inner = unwrap_model(model)
    multi_net = is_ddnn(inner)
    if multi_net:
        net = net or inner.predict_net
        check_net_name(net, inner.net_names)
    elif net is not None:
        raise ValueError(f'net={net!r} given, but {type(inner).__name__} is '
                         'a single-net model; leave net=None')
    norms = [m for m in inner.modules() if isinstance(m, _BatchNorm)
             and m.track_running_stats]
    if not norms:
        return 0
    saved = {m: _bn_state(m) for m in norms}

    inner.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.train()
    seen = 0
    try:
        for batch in itertools.islice(dataloader, num_batches):
            data = inner.data_preprocessor(batch, training=True)
            inputs = data['inputs']
            if multi_net:
                inner.forward_nets(inputs, [net])
            else:
                inner(inputs, mode='tensor')
            seen += 1
    finally:
        for m, state in saved.items():
            m.momentum = state['momentum']
            m.train(state['training'])
            if seen == 0 or int(m.num_batches_tracked) == 0:
                # Not on this net's path (or nothing ran): keep its stats.
                m.running_mean.copy_(state['running_mean'])
                m.running_var.copy_(state['running_var'])
                m.num_batches_tracked.copy_(state['num_batches_tracked'])
        inner.eval()
    if seen == 0:
        raise ValueError('the dataloader yielded no batch: nothing to '
                         'recalibrate the BatchNorm statistics with')
    if seen < num_batches:
        warnings.warn(
            f'recalibrate_bn: {num_batches} batches asked, but the '
            f'dataloader has only {seen}; the BatchNorm statistics are '
            f'averaged over {seen} batches', stacklevel=2)
    return seen

# Copyright (c) mmekd contributors. All rights reserved.
"""BatchNorm with per-net parts, for nets that share a block.

Two ways a norm can serve several nets of a depth-dynamic ResNet:
:class:`PrivateStatsBatchNorm2d` (weights shared, one set of running
statistics per distinct input; ``norm_sharing='stats'``) and
:class:`PrivateBatchNorm2d` (weights and statistics per net;
``norm_sharing='private'``). Both keep the full net's tensors under the
plain BatchNorm names, so plain ResNet checkpoints load.

What the rest of mmekd asks of them, without knowing their child names:

- :func:`use_net` (a context): run the given norms as a net;
- :meth:`state_key`: which state-dict key (relative to the norm) holds a
  net's ``weight`` / ``running_mean`` / ...;
- :func:`per_net_norms`: the per-net norms of a module.

The child names and the state-key grammar are :mod:`mmekd.vocabulary`'s
(``sub_norms`` = ``PRIVATE_NORMS``, ``sub_stats`` = ``PRIVATE_STATS``).
"""
import copy
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmekd.vocabulary import (FULL_NET, PRIVATE_NORMS, PRIVATE_STATS,
                              per_net_key)

_STATS = ('running_mean', 'running_var', 'num_batches_tracked')


def _fill_missing_copies(state_dict: dict, prefix: str, child: str,
                         names: Sequence[str],
                         tensors: Sequence[str]) -> None:
    """Give every copy ``{prefix}{child}.{name}.`` of a norm that
    ``state_dict`` lacks the norm's own ``tensors`` (a checkpoint without
    the copies), in place, so that loading does not report them missing."""
    for name in names:
        sub_prefix = f'{prefix}{child}.{name}.'
        if any(k.startswith(sub_prefix) for k in state_dict):
            continue
        for key in tensors:
            if prefix + key in state_dict:
                state_dict[sub_prefix + key] = state_dict[prefix + key]


def _take_over(new: nn.BatchNorm2d, norm: nn.BatchNorm2d) -> None:
    """Make ``new`` (a per-net norm) stand in for ``norm``: its values (and
    those of the copies, see ``_fill_missing_copies``), trainability and
    mode; the full net active."""
    new.active_net = FULL_NET
    new.load_state_dict(norm.state_dict())
    new.requires_grad_(norm.weight.requires_grad if norm.affine else False)
    new.train(norm.training)


class PrivateBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that is the full net's norm and holds private copies for
    the sub-nets that run through it.

    The full net's parameters keep their names (``...bn1.weight``), so plain
    ResNet checkpoints load; the sub-nets' copies live in ``sub_norms``
    (``...bn1.sub_norms.sub0.weight``). A checkpoint without the copies (a
    plain ResNet) initialises them from the full net's values.

    Args:
        norm (nn.BatchNorm2d): The norm to take over (weights and statistics
            are copied).
        sub_nets (Sequence[str]): Sub-nets that use this norm.
    """

    def __init__(self, norm: nn.BatchNorm2d, sub_nets: Sequence[str]):
        super().__init__(norm.num_features, norm.eps, norm.momentum,
                         norm.affine, norm.track_running_stats)
        # The copies must exist before load_state_dict, whose override below
        # reads ``self.sub_norms``.
        self.sub_norms = nn.ModuleDict(
            {name: copy.deepcopy(norm)
             for name in sub_nets})
        _take_over(self, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active_net == FULL_NET:
            return super().forward(x)
        return self.sub_norms[self.active_net](x)

    def state_key(self, net: str, name: str) -> str:
        """The key (relative to this norm) of ``net``'s tensor ``name``
        (``'weight'``, ``'running_mean'``, ...)."""
        if net == FULL_NET or net not in self.sub_norms:
            return name
        return per_net_key(PRIVATE_NORMS, net, name)

    def sync_sub_norms(self) -> None:
        """Copy the full net's values into every private copy."""
        own = {
            k: v
            for k, v in super().state_dict().items()
            if not k.startswith('sub_norms.')
        }
        for norm in self.sub_norms.values():
            norm.load_state_dict(own)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A plain ResNet checkpoint has no private copies: start them from
        # the full net's values instead of reporting them missing.
        _fill_missing_copies(state_dict, prefix, PRIVATE_NORMS, self.sub_norms,
                             ('weight', 'bias', *_STATS))
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)


class PrivateStatsBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d whose weight and bias all nets share, with one set of
    running statistics per distinct input.

    Nets that reach the norm through the same blocks see the same input in a
    training step and share one set; the full net's set is the module's own
    buffers (plain ResNet names, so plain checkpoints load), every other set
    lives in ``sub_stats`` under the name of its first sub-net
    (``...bn1.sub_stats.sub0.running_mean``). In training mode the output
    uses the batch statistics, exactly as a shared BatchNorm: training is
    unchanged, only the statistics each net is tested with are its own.

    Args:
        norm (nn.BatchNorm2d): The norm to take over (weights and statistics
            are copied).
        groups (Sequence[Sequence[str]]): The nets that use this norm,
            grouped by input; the full net's group comes first.
    """

    def __init__(self, norm: nn.BatchNorm2d,
                 groups: Sequence[Sequence[str]]):
        super().__init__(norm.num_features, norm.eps, norm.momentum,
                         norm.affine, norm.track_running_stats)
        if not norm.track_running_stats:
            raise ValueError("private_norm='stats' needs BatchNorm with "
                             'track_running_stats=True')
        if FULL_NET not in groups[0]:
            raise ValueError(f'the first group must hold {FULL_NET!r}, got '
                             f'{[list(g) for g in groups]}')
        # net -> key of its set in sub_stats (None: the module's own buffers)
        self.stats_of = dict.fromkeys(groups[0])
        sub_stats = {}
        for group in groups[1:]:
            sub_stats[group[0]] = nn.BatchNorm2d(
                norm.num_features, norm.eps, norm.momentum, affine=False)
            self.stats_of.update(dict.fromkeys(group, group[0]))
        self.sub_stats = nn.ModuleDict(sub_stats)
        _take_over(self, norm)

    def state_key(self, net: str, name: str) -> str:
        """The key (relative to this norm) of ``net``'s tensor ``name``
        (``'weight'``, ``'running_mean'``, ...): weights are shared, the
        statistics are those of the net's input group."""
        key = self.stats_of.get(net)
        if key is None or name in ('weight', 'bias'):
            return name
        return per_net_key(PRIVATE_STATS, key, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self.stats_of[self.active_net]
        if key is None:
            return super().forward(x)
        stats = self.sub_stats[key]
        # nn.BatchNorm2d.forward with this module's weight and bias and the
        # statistics (buffers, momentum, mode) of ``stats``.
        factor = 0.0 if stats.momentum is None else stats.momentum
        if stats.training:
            stats.num_batches_tracked.add_(1)
            if stats.momentum is None:  # cumulative moving average
                factor = 1.0 / float(stats.num_batches_tracked)
        return F.batch_norm(x, stats.running_mean, stats.running_var,
                            self.weight, self.bias, stats.training, factor,
                            self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A checkpoint trained with shared statistics (or a plain ResNet one)
        # has no per-input sets: start them from the stored ones.
        _fill_missing_copies(state_dict, prefix, PRIVATE_STATS, self.sub_stats,
                             _STATS)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)


PER_NET_NORMS = (PrivateBatchNorm2d, PrivateStatsBatchNorm2d)


def converted_copies(module: nn.Module):
    """The per-net children ``module`` holds although it is no longer a
    per-net norm (e.g. after ``sync_bn`` converted it), or ``[]``."""
    if isinstance(module, PER_NET_NORMS):
        return []
    return [n for n, _ in module.named_children()
            if n in (PRIVATE_NORMS, PRIVATE_STATS)]


def per_net_norms(module: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """``(name, norm)`` of every per-net norm in ``module``."""
    for name, m in module.named_modules():
        if isinstance(m, PER_NET_NORMS):
            yield name, m


@contextmanager
def use_net(norms: Iterable[nn.Module], net: str):
    """Run ``norms`` (per-net norms) as ``net`` inside the context; the
    full net afterwards."""
    norms = list(norms)
    for norm in norms:
        norm.active_net = net
    try:
        yield
    finally:
        for norm in norms:
            norm.active_net = FULL_NET

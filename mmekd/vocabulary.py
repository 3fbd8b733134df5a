# Copyright (c) mmekd contributors. All rights reserved.
"""The words every layer of mmekd uses, and nothing else.

- Net names: the full net is ``'full'`` (:data:`FULL_NET`), sub-nets
  ``'sub0'``, ``'sub1'``, ... (:func:`sub_net_name`); :func:`check_net_name`
  is the one check of a name against a model's nets.
- The per-net state-key grammar: a per-net module keeps the full net's
  tensors under the plain names and a copy per net (or per group of nets)
  in a child named :data:`PER_NET_CHILDREN` (``...bn1.sub_norms.sub0.weight``,
  ``...bn1.sub_stats.sub0.running_mean``, ``head.sub_fcs.sub0.weight``).
- :func:`unwrap_model` (a model inside DDP or another MMEngine wrapper) and
  :func:`is_ddnn` (a model with several nets).

Example::

    >>> check_net_name('sub0', ['full', 'sub0'])
    'sub0'
    >>> private_net_of_key('backbone.layer1.0.bn1.sub_norms.sub0.weight')
    'sub0'
"""
import re
from typing import Optional, Sequence

import torch.nn as nn
from mmengine.model import is_model_wrapper

FULL_NET = 'full'


def sub_net_name(index: int) -> str:
    """Name of the ``index``-th sub-net (``'sub0'``, ``'sub1'``, ...)."""
    return f'sub{index}'


class UnknownNetError(KeyError, ValueError):
    """A net name that the model does not have (a ``KeyError`` for lookups,
    a ``ValueError`` for config fields)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def check_net_name(net: str, nets: Sequence[str]) -> str:
    """Return ``net`` if it is one of ``nets``, else raise
    :class:`UnknownNetError` naming the nets there are."""
    if net not in nets:
        raise UnknownNetError(f'unknown net {net!r}; this model has '
                              f'{list(nets)}')
    return net


# Children holding per-net copies: BatchNorm weights and statistics per net
# (norm_sharing='private'), statistics per input group ('stats'), a
# classifier per net (private_fc=True).
PRIVATE_NORMS, PRIVATE_STATS, PRIVATE_FCS = 'sub_norms', 'sub_stats', 'sub_fcs'
PER_NET_CHILDREN = (PRIVATE_NORMS, PRIVATE_STATS, PRIVATE_FCS)
_PER_NET_STATS_KEY = re.compile(rf'\.{PRIVATE_STATS}\.')
_PRIVATE_KEY = re.compile(rf'\.(?:{PRIVATE_NORMS}|{PRIVATE_FCS})\.([^.]+)\.')


def per_net_key(child: str, net: str, name: str) -> str:
    """The key, relative to a per-net module, of ``net``'s copy of tensor
    ``name`` kept in ``child`` (one of :data:`PER_NET_CHILDREN`)."""
    return f'{child}.{net}.{name}'


def is_per_net_stats_key(key: str) -> bool:
    """Whether a state-dict key holds per-net running statistics."""
    return bool(_PER_NET_STATS_KEY.search(key))


def private_net_of_key(key: str) -> Optional[str]:
    """The net whose private copy (BatchNorm weights with
    ``norm_sharing='private'``, or a private classifier) a state-dict key
    holds, or None."""
    m = _PRIVATE_KEY.search(key)
    return m.group(1) if m else None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP (or any MMEngine model wrapper)."""
    while is_model_wrapper(model):
        model = model.module
    return model


def is_ddnn(model: nn.Module) -> bool:
    """Whether ``model`` (wrapped or not) has several nets: it names them
    (``net_names``) and runs them on one batch (``forward_nets``), as
    :class:`mmekd.DDNNClassifier` does."""
    model = unwrap_model(model)
    return callable(getattr(model, 'forward_nets', None)) and isinstance(
        getattr(model, 'net_names', None), (list, tuple))

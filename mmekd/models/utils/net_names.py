# Copyright (c) mmekd contributors. All rights reserved.
"""How the nets of a depth-dynamic model are named everywhere (losses,
metrics, export): the full net is ``'full'``, sub-nets ``'sub0'``, ..."""

from typing import Sequence

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

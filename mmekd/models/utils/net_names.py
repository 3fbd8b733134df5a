# Copyright (c) mmekd contributors. All rights reserved.
"""How the nets of a depth-dynamic model are named everywhere (losses,
metrics, export): the full net is ``'full'``, sub-nets ``'sub0'``, ..."""

FULL_NET = 'full'


def sub_net_name(index: int) -> str:
    """Name of the ``index``-th sub-net (``'sub0'``, ``'sub1'``, ...)."""
    return f'sub{index}'

# Copyright (c) mmekd contributors. All rights reserved.
"""Which nets one DDNN training step trains (``train_nets``).

- ``'all'``: every net.
- ``'sandwich'``: the full net and the smallest sub-net (fewest blocks).
- ``'sandwich_random'``: those two plus one of the other sub-nets, drawn
  from the runner's seed and iteration (MMEngine's message hub), so a
  resumed run draws the same nets; outside a runner, from seed 0 and a count
  of this sampler's draws.

Example::

    >>> sampler = NetSampler('sandwich', ['full', 'sub0', 'sub1'],
    ...                      {'sub0': 8, 'sub1': 4})
    >>> sampler.draw()
    ['full', 'sub1']
"""
import random
from typing import Dict, List, Sequence

from mmengine.logging import MessageHub

from mmekd.vocabulary import FULL_NET


class NetSampler:
    """Draws the nets of each training step (see the module docstring).

    Args:
        train_nets (str): ``'all'``, ``'sandwich'`` or ``'sandwich_random'``.
        net_names (Sequence[str]): All nets, ``'full'`` first.
        sizes (dict[str, int]): Blocks of every sub-net.
    """

    MODES = ('all', 'sandwich', 'sandwich_random')

    def __init__(self, train_nets: str, net_names: Sequence[str],
                 sizes: Dict[str, int]):
        if train_nets not in self.MODES:
            raise ValueError(f'train_nets must be one of {self.MODES}, '
                             f'got {train_nets!r}')
        self.mode = train_nets
        self.net_names = list(net_names)
        subs = [n for n in self.net_names if n != FULL_NET]
        self.smallest = None
        self.middle: List[str] = []
        if train_nets != 'all' and subs:
            fewest = min(sizes[n] for n in subs)
            smallest = [n for n in subs if sizes[n] == fewest]
            if len(smallest) > 1:
                raise ValueError(
                    f'train_nets={train_nets!r} needs one smallest sub-net, '
                    f'but {smallest} all have {fewest} blocks; make their '
                    'sub_stage_blocks differ in size or use '
                    "train_nets='all'")
            self.smallest = smallest[0]
            self.middle = [n for n in subs if n != self.smallest]
        if train_nets == 'sandwich_random' and not self.middle:
            raise ValueError(
                "train_nets='sandwich_random' draws one sub-net besides the "
                f'smallest, but the backbone has only {subs}; use '
                "train_nets='sandwich' (or add sub_stage_blocks)")
        self.draws = 0  # steps drawn outside a runner

    def draw(self) -> List[str]:
        """The nets of one training step, in ``net_names`` order.
        ``'sandwich_random'`` draws a new middle net on every call."""
        if self.mode == 'all' or self.smallest is None:
            return list(self.net_names)
        keep = {FULL_NET, self.smallest}
        if self.mode == 'sandwich_random':
            hub = MessageHub.get_current_instance()
            seed, step = hub.get_info('seed'), hub.get_info('iter')
            if step is None:  # not in a runner's training loop
                seed, step = 0, self.draws
            self.draws += 1
            # A fresh generator per step: the draw depends on (seed, step)
            # only, not on how many draws came before (exact resume).
            keep.add(random.Random(f'{seed or 0}:{step}').choice(
                self.middle))
        return [n for n in self.net_names if n in keep]

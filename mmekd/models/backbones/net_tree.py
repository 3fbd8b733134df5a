# Copyright (c) mmekd contributors. All rights reserved.
"""Which blocks each net of a depth-dynamic ResNet runs, and in which order.

The nets of a DDNN form a tree: every net runs the stem, then its own path
of ``(stage, block)`` pairs; nets whose paths agree on a prefix see the same
input there, so that prefix is computed once. :class:`NetTree` owns the
parsing of the sub-net spec, the paths, the input groups (for per-net
BatchNorm statistics) and the one traversal, :meth:`NetTree.walk`, that
every user of the tree (the backbone's forward, the memory-efficient
training step) calls with what to do at each block.

Example (ResNet-18 ``[2,2,2,2]`` in ResNet-34 ``[3,4,6,3]``): both nets
run ``(0, 0), (0, 1)`` once, then the full net goes on with ``(0, 2)`` and
the sub-net with ``(1, 0)``: the tree branches after block ``(0, 1)``.
"""
from collections import OrderedDict
from typing import (Callable, Dict, Hashable, List, NamedTuple, Optional,
                    Sequence, Tuple, Union)

import torch

from mmekd.vocabulary import FULL_NET, check_net_name, sub_net_name

# One sub-net, per stage: a block count ``k`` (chosen by ``block_choice``) or
# an explicit list of block indices.
SubNetSpec = Sequence[Union[int, Sequence[int]]]
Path = List[Tuple[int, int]]


def select_blocks(num_blocks: int, k: int, block_choice: str) -> Tuple[int]:
    """Indices of the ``k`` blocks a sub-net keeps out of ``num_blocks``.

    Args:
        num_blocks (int): Blocks of the stage in the full net.
        k (int): Blocks the sub-net keeps, ``1 <= k <= num_blocks``.
        block_choice (str): ``'first'`` keeps blocks ``0..k-1``; ``'spread'``
            keeps block 0 (stride and projection) and spreads the other
            ``k-1`` evenly over the rest of the stage, ending at the last.

    Returns:
        tuple[int]: Sorted block indices.
    """
    if block_choice == 'first' or k == 1:
        return tuple(range(k))
    if block_choice == 'spread':
        # Evenly spaced positions in [1, num_blocks - 1], always unique
        # because k - 1 <= num_blocks - 1.
        rest = [
            1 + round(i * (num_blocks - 2) / max(k - 2, 1))
            for i in range(k - 1)
        ] if k > 2 else [num_blocks - 1]
        return tuple([0] + rest)
    raise ValueError(f"block_choice must be 'first' or 'spread', "
                     f'got {block_choice!r}')


class TreeNode(NamedTuple):
    """One computed block of :meth:`NetTree.walk`.

    Attributes:
        stage (int), block (int): The block.
        nets (list[str]): The nets that run it on this input (the first
            one's BatchNorm statistics are used).
        ends (list[str]): The nets whose path ends with it.
        features (list[str]): The nets for which its output is their
            output of ``stage`` (their last block of the stage, with
            ``stage`` one of the walk's ``out_stages``).
        branches (int): Distinct blocks the nets go on to.
    """
    stage: int
    block: int
    nets: List[str]
    ends: List[str]
    features: List[str]
    branches: int


# visit(node, y) -> (tensor the nets below are given, called after them)
Visit = Callable[[TreeNode, torch.Tensor],
                 Tuple[torch.Tensor, Optional[Callable[[], None]]]]


class NetTree:
    """The nets of a depth-dynamic ResNet and their blocks.

    Args:
        stage_blocks (Sequence[int]): Blocks per stage of the full net.
        sub_stage_blocks (Sequence): One entry per sub-net; each has one
            item per stage: a block count ``k`` (``1 <= k <=`` the stage's
            blocks) or an explicit sorted list of block indices that starts
            with 0.
        block_choice (str): Which ``k`` blocks a count keeps: ``'first'``
            or ``'spread'`` (see :func:`select_blocks`).
        field (str): The config field the sub-nets came from, for
            messages. Defaults to ``'sub_stage_blocks'``.
        arch (str): The full net, for messages (e.g. ``'depth 34'``).

    Attributes:
        net_blocks (OrderedDict[str, tuple[tuple[int]]]): Per net, the block
            indices of each stage; ``'full'`` first, then ``'sub0'``, ...
        paths (dict[str, list[tuple[int, int]]]): Per net, its
            ``(stage, block)`` pairs in order.
    """

    def __init__(self,
                 stage_blocks: Sequence[int],
                 sub_stage_blocks: Sequence[SubNetSpec] = (),
                 block_choice: str = 'first',
                 field: str = 'sub_stage_blocks',
                 arch: str = ''):
        if block_choice not in ('first', 'spread'):
            raise ValueError(f"block_choice must be 'first' or 'spread', "
                             f'got {block_choice!r}')
        self.stage_blocks = tuple(stage_blocks)
        self.block_choice = block_choice
        self._field, self._arch = field, arch
        full = tuple(tuple(range(n)) for n in self.stage_blocks)
        self.net_blocks: Dict[str, Tuple[Tuple[int]]] = OrderedDict(
            [(FULL_NET, full)])
        for i, spec in enumerate(sub_stage_blocks):
            blocks = self._parse(i, spec)
            for other, other_blocks in self.net_blocks.items():
                if blocks == other_blocks:
                    raise ValueError(
                        f'{field}[{i}] = {list(spec)} selects the same '
                        f'blocks as {other!r}; every net must be distinct')
            self.net_blocks[sub_net_name(i)] = blocks
        self.paths: Dict[str, Path] = {
            name: [(s, b) for s, stage in enumerate(blocks) for b in stage]
            for name, blocks in self.net_blocks.items()
        }

    # ------------------------------------------------------------------ #
    # the nets
    # ------------------------------------------------------------------ #
    @property
    def net_names(self) -> List[str]:
        return list(self.net_blocks)

    def check_net(self, net: str) -> str:
        return check_net_name(net, self.net_names)

    def _parse(self, index: int, spec: SubNetSpec) -> Tuple[Tuple[int]]:
        where = f'{self._field}[{index}]'
        full = (f'the full net ({self._arch + ", " if self._arch else ""}'
                f'blocks {list(self.stage_blocks)})')
        if isinstance(spec, (str, int)) or not isinstance(spec, Sequence):
            raise TypeError(f'{where} must be a list with one block count '
                            f'per stage, got {spec!r}')
        if len(spec) != len(self.stage_blocks):
            raise ValueError(
                f'{where} = {list(spec)} has {len(spec)} stages, but {full} '
                f'has {len(self.stage_blocks)}')
        blocks = []
        for s, (item, n) in enumerate(zip(spec, self.stage_blocks)):
            if isinstance(item, bool) or not isinstance(item, (int, Sequence)):
                raise TypeError(f'{where}[{s}] must be a block count or a '
                                f'list of block indices, got {item!r}')
            if isinstance(item, int):
                if not 1 <= item <= n:
                    raise ValueError(
                        f'{where}[{s}] = {item}: a sub-net keeps between 1 '
                        f'and {n} blocks in stage {s} ({full}); a sub-net '
                        'cannot be deeper than its full net')
                blocks.append(select_blocks(n, item, self.block_choice))
                continue
            idx = tuple(item)
            if any(isinstance(b, bool) or not isinstance(b, int) for b in idx):
                raise TypeError(f'{where}[{s}] = {list(item)}: block '
                                'indices must be integers')
            if (not idx or idx[0] != 0 or list(idx) != sorted(set(idx))
                    or idx[-1] >= n):
                raise ValueError(
                    f'{where}[{s}] = {list(item)}: explicit block indices '
                    'must be sorted, unique, start with 0 (the block with '
                    f'the stride and projection) and be < {n}')
            blocks.append(idx)
        return tuple(blocks)

    def input_groups(self) -> Dict[Tuple[int, int], List[List[str]]]:
        """For every block, the nets that run it grouped by input: nets
        whose paths agree up to and including the block (the full net's
        group first)."""
        groups = OrderedDict()
        for net, path in self.paths.items():
            for i, stage_block in enumerate(path):
                groups.setdefault(stage_block, OrderedDict()).setdefault(
                    tuple(path[:i + 1]), []).append(net)
        return {k: list(v.values()) for k, v in groups.items()}

    # ------------------------------------------------------------------ #
    # the traversal
    # ------------------------------------------------------------------ #
    def walk(self,
             x: torch.Tensor,
             nets: Sequence[str],
             run_block: Callable[[int, int, torch.Tensor, str],
                                 torch.Tensor],
             out_stages: Sequence[int],
             visit: Visit,
             variant: Optional[Callable[[str, int, int], Hashable]] = None
             ) -> None:
        """Run ``nets`` from ``x`` (the stem's output), each block once per
        distinct input, depth first in the order of ``nets``.

        The order is the same for every caller, so BatchNorm statistics
        (updated in the order blocks run) agree between them.

        Args:
            x (Tensor): Input of the first block.
            nets (Sequence[str]): The nets to run (names already checked
                at the public door, e.g. the backbone's ``forward_nets``).
            run_block: ``run_block(stage, block, x, net) -> y``.
            out_stages (Sequence[int]): Stages whose output is a feature
                (the backbone's ``out_indices``).
            visit: Called once per computed block with its
                :class:`TreeNode` and output; returns the tensor the nets
                below are given (and their features) and a function called
                once the tree below the block is done (or None).
            variant: ``variant(net, stage, block)``: nets that agree on
                the path but not on this value run the block separately
                (e.g. different drop path rates in training). Defaults to
                None (the path alone decides).
        """
        items = [(n, self.paths[n]) for n in nets]
        self._walk(x, items, 0, run_block, set(out_stages), visit, variant)

    @staticmethod
    def _key(net: str, path: Path, pos: int, variant) -> tuple:
        """What groups nets at ``path[pos]``: the block, and the variant."""
        return path[pos], variant(net, *path[pos]) if variant else None

    def _walk(self, x: torch.Tensor, items: List[Tuple[str, Path]],
              pos: int, run_block, out_stages: set, visit: Visit,
              variant) -> None:
        """Walk the subtree of the nets ``items`` (``(net, path)`` pairs
        that agree on ``path[:pos]``; ``x`` is the output of that common
        prefix). A method, not a closure: recursion leaves no reference
        cycle that would keep a step's activations alive."""
        key = self._key
        groups = OrderedDict()
        for net, path in items:
            if pos < len(path):
                groups.setdefault(key(net, path, pos, variant), []).append(
                    (net, path))
        for ((stage, block), _), members in groups.items():
            y = run_block(stage, block, x, members[0][0])
            ends, features, nexts = [], [], set()
            for net, path in members:
                last = pos + 1 == len(path)
                if last:
                    ends.append(net)
                else:
                    nexts.add(key(net, path, pos + 1, variant))
                if stage in out_stages and (last
                                            or path[pos + 1][0] != stage):
                    features.append(net)
            node = TreeNode(stage, block, [n for n, _ in members], ends,
                            features, len(nexts))
            y, after = visit(node, y)
            self._walk(y, members, pos + 1, run_block, out_stages, visit,
                       variant)
            if after is not None:
                after()

# Copyright (c) mmekd contributors. All rights reserved.
"""Depth-level dynamic ResNet: one weight-shared full ResNet that contains
shallower sub-nets (fewer blocks per stage, same block type)."""
import copy
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones import ResNet, ResNet_CIFAR
from torch.nn.modules.batchnorm import _NormBase

from mmekd.registry import MODELS
from ..utils import FULL_NET, sub_net_name

# One sub-net, per stage: a block count ``k`` (chosen by ``block_choice``) or
# an explicit list of block indices.
SubNetSpec = Sequence[Union[int, Sequence[int]]]


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
        _fill_missing_copies(state_dict, prefix, 'sub_norms', self.sub_norms,
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
        _fill_missing_copies(state_dict, prefix, 'sub_stats', self.sub_stats,
                             _STATS)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)


@MODELS.register_module()
class DepthDynamicResNet(ResNet):
    """Depth-level dynamic ResNet (DDNN backbone).

    A full ImageNet-style ResNet whose sub-nets keep fewer blocks per stage
    and share all weights with it, e.g. ResNet-18 ``[2, 2, 2, 2]`` inside
    ResNet-34 ``[3, 4, 6, 3]``. The full net keeps MMPretrain's parameter
    names, so MMPretrain and torchvision ResNet weights load into it.

    :meth:`forward` runs the full net, exactly like :class:`ResNet`.
    :meth:`forward_nets` runs several nets on one batch and computes the stem
    and the leading blocks they share only once (exact in training mode too:
    same input, same weights, same batch statistics).

    Args:
        depth (int): Depth of the full net, one of 18, 34, 50, 101, 152.
        sub_depths (Sequence): One entry per sub-net; each entry has one item
            per stage: a block count ``k`` (``1 <= k <=`` the stage's blocks
            in the full net) or an explicit sorted list of block indices that
            starts with 0 (block 0 holds the stride and the projection).
            Defaults to ``()`` (full net only).
        block_choice (str): Which ``k`` blocks a count keeps: ``'first'``
            (blocks ``0..k-1``, default) or ``'spread'`` (block 0 and the
            others evenly spread to the end of the stage).
        private_norm (bool | str): What of BatchNorm is private to a net.
            ``'stats'`` (default): the running statistics. Weights stay shared
            and training is unchanged (batch statistics), but a block that
            nets reach with different inputs keeps one set of statistics
            per input, so each net is tested with statistics of its own
            activations instead of a mixture of all nets' (see
            :class:`PrivateStatsBatchNorm2d`). ``False``: nothing, BatchNorm
            (statistics included) is shared by all nets. ``True``: weights
            and statistics, every sub-net gets its own BatchNorm layers
            (then nothing is computed once for several nets). Convolutions
            are always shared.
        stage_blocks (Sequence[int], optional): Override the full net's
            blocks per stage (block type still follows ``depth``), e.g.
            ``depth=34, stage_blocks=(3, 3, 3, 3)``. Defaults to None.
        **kwargs: Other arguments of :class:`mmpretrain.models.ResNet`.
    """

    def __init__(self,
                 depth: int,
                 sub_depths: Sequence[SubNetSpec] = (),
                 block_choice: str = 'first',
                 private_norm: Union[bool, str] = 'stats',
                 stage_blocks: Optional[Sequence[int]] = None,
                 **kwargs):
        if depth not in ResNet.arch_settings:
            # KeyError, as mmpretrain's ResNet raises for an unknown depth.
            raise KeyError(
                f'invalid depth {depth!r} for resnet: depth must be one of '
                f'{sorted(ResNet.arch_settings)}')
        if stage_blocks is not None:
            block, default_blocks = ResNet.arch_settings[depth]
            stage_blocks = tuple(int(b) for b in stage_blocks)
            if (len(stage_blocks) != len(default_blocks)
                    or min(stage_blocks) < 1):
                raise ValueError(
                    f'stage_blocks must have {len(default_blocks)} positive '
                    f'counts, got {stage_blocks}')
            # An instance-level table makes ResNet build these counts.
            self.arch_settings = {depth: (block, stage_blocks)}
        super().__init__(depth, **kwargs)
        if block_choice not in ('first', 'spread'):
            raise ValueError(f"block_choice must be 'first' or 'spread', "
                             f'got {block_choice!r}')
        self.block_choice = block_choice
        if not (isinstance(private_norm, bool) or private_norm == 'stats'):
            raise ValueError("private_norm must be False, 'stats' or True, "
                             f'got {private_norm!r}')
        self.private_norm = private_norm
        # (stage, block) -> its PrivateStatsBatchNorm2d (private_norm='stats')
        self._stats_norms: Dict[Tuple[int, int], List[nn.Module]] = {}

        full = tuple(tuple(range(n)) for n in self.stage_blocks)
        self.net_blocks: Dict[str, Tuple[Tuple[int]]] = OrderedDict(
            [(FULL_NET, full)])
        for i, spec in enumerate(sub_depths):
            blocks = self._parse_sub_net(i, spec)
            for other, other_blocks in self.net_blocks.items():
                if blocks == other_blocks:
                    raise ValueError(
                        f'sub_depths[{i}] = {list(spec)} selects the same '
                        f'blocks as {other!r}; every net must be distinct')
            self.net_blocks[sub_net_name(i)] = blocks
        self._paths = {
            name: [(s, b) for s, stage in enumerate(blocks) for b in stage]
            for name, blocks in self.net_blocks.items()
        }
        if private_norm == 'stats':
            self._make_private_stats()
        elif private_norm:
            self._make_private_norms()

    # ------------------------------------------------------------------ #
    # construction
    # ------------------------------------------------------------------ #
    def _parse_sub_net(self, index: int,
                       spec: SubNetSpec) -> Tuple[Tuple[int]]:
        where = f'sub_depths[{index}]'
        if isinstance(spec, (str, int)) or not isinstance(spec, Sequence):
            raise TypeError(f'{where} must be a list with one block count '
                            f'per stage, got {spec!r}')
        if len(spec) != self.num_stages:
            raise ValueError(
                f'{where} = {list(spec)} has {len(spec)} stages, but the full '
                f'net (depth {self.depth}, blocks {list(self.stage_blocks)}) '
                f'has {self.num_stages}')
        blocks = []
        for s, (item, n) in enumerate(zip(spec, self.stage_blocks)):
            if isinstance(item, bool) or not isinstance(item, (int, Sequence)):
                raise TypeError(f'{where}[{s}] must be a block count or a '
                                f'list of block indices, got {item!r}')
            if isinstance(item, int):
                if not 1 <= item <= n:
                    raise ValueError(
                        f'{where}[{s}] = {item}: a sub-net keeps between 1 '
                        f'and {n} blocks in stage {s} (the full net, depth '
                        f'{self.depth}, has {list(self.stage_blocks)}); a '
                        f'sub-net cannot be deeper than its full net')
                blocks.append(select_blocks(n, item, self.block_choice))
            else:
                idx = tuple(item)
                if any(isinstance(b, bool) or not isinstance(b, int)
                       for b in idx):
                    raise TypeError(f'{where}[{s}] = {list(item)}: block '
                                    'indices must be integers')
                if (not idx or idx[0] != 0 or list(idx) != sorted(set(idx))
                        or idx[-1] >= n):
                    raise ValueError(
                        f'{where}[{s}] = {list(item)}: explicit block '
                        f'indices must be sorted, unique, start with 0 (the '
                        f'block with the stride and projection) and be < {n}')
                blocks.append(idx)
        return tuple(blocks)

    def _make_private_norms(self) -> None:
        """Replace every BatchNorm2d by a :class:`PrivateBatchNorm2d` that
        holds a copy for each sub-net running through it."""
        users = {}  # module name prefix -> nets using it
        for name, blocks in self.net_blocks.items():
            for s, stage in enumerate(blocks):
                for b in stage:
                    users.setdefault(f'{self.res_layers[s]}.{b}.',
                                     []).append(name)
        sub_nets = [n for n in self.net_blocks if n != FULL_NET]
        for mod_name, module in list(self.named_modules()):
            # Any norm, so that e.g. GroupNorm is refused, not left shared.
            if not isinstance(module, (_NormBase, nn.GroupNorm, nn.LayerNorm)):
                continue
            if type(module) is not nn.BatchNorm2d:
                raise TypeError(
                    f'private_norm=True supports BatchNorm2d (norm_cfg '
                    f"type='BN') only; {mod_name} is {type(module).__name__}")
            if mod_name.startswith('layer'):
                block_prefix = '.'.join(mod_name.split('.')[:2]) + '.'
                nets = [n for n in users[block_prefix] if n != FULL_NET]
            else:  # stem
                nets = sub_nets
            parent_name, _, child = mod_name.rpartition('.')
            parent = self.get_submodule(parent_name) if parent_name else self
            setattr(parent, child, PrivateBatchNorm2d(module, nets))

    def _input_groups(self) -> Dict[Tuple[int, int], List[List[str]]]:
        """For every block, the nets that run it grouped by input: nets whose
        paths agree up to and including the block (the full net's group
        first)."""
        groups = OrderedDict()
        for net, path in self._paths.items():
            for i, stage_block in enumerate(path):
                groups.setdefault(stage_block, OrderedDict()).setdefault(
                    tuple(path[:i + 1]), []).append(net)
        return {k: list(v.values()) for k, v in groups.items()}

    def _make_private_stats(self) -> None:
        """Replace the BatchNorm2d of every block that nets reach with
        different inputs by a :class:`PrivateStatsBatchNorm2d`. The stem and
        a common leading part see one input and keep plain BatchNorm."""
        for (stage, block), groups in self._input_groups().items():
            if len(groups) == 1:
                continue
            name = f'{self.res_layers[stage]}.{block}'
            block_module = self.get_submodule(name)
            norms = []
            for mod_name, module in list(block_module.named_modules()):
                if type(module) is not nn.BatchNorm2d:
                    if isinstance(module, (_NormBase, nn.GroupNorm,
                                           nn.LayerNorm)):
                        raise TypeError(
                            "private_norm='stats' (the default) keeps "
                            'running statistics per net for BatchNorm2d '
                            "(norm_cfg type='BN') only; "
                            f'{name}.{mod_name} is {type(module).__name__}: '
                            'set private_norm=False to share it between nets')
                    continue
                parent_name, _, child = mod_name.rpartition('.')
                parent = (block_module.get_submodule(parent_name)
                          if parent_name else block_module)
                norm = PrivateStatsBatchNorm2d(module, groups)
                setattr(parent, child, norm)
                norms.append(norm)
            self._stats_norms[(stage, block)] = norms

    def init_weights(self):
        super().init_weights()
        if (isinstance(self.init_cfg, dict)
                and self.init_cfg['type'] == 'Pretrained'):
            # The checkpoint set the private copies (a plain ResNet one
            # starts them from the full net's values, see
            # PrivateBatchNorm2d); syncing would overwrite them.
            return
        # zero_init_residual and other inits touched the full net's norms.
        for m in self.modules():
            if isinstance(m, PrivateBatchNorm2d):
                m.sync_sub_norms()

    # ------------------------------------------------------------------ #
    # nets
    # ------------------------------------------------------------------ #
    @property
    def net_names(self) -> List[str]:
        """Names of all nets: ``'full'`` first, then ``'sub0'``, ..."""
        return list(self.net_blocks)

    @property
    def sub_net_names(self) -> List[str]:
        return [n for n in self.net_blocks if n != FULL_NET]

    def blocks_per_stage(self, net: str) -> List[int]:
        """Block count per stage of ``net``."""
        return [len(s) for s in self.net_blocks[self._check_net(net)]]

    def _check_net(self, net: str) -> str:
        if net not in self.net_blocks:
            raise KeyError(f'unknown net {net!r}; this backbone has '
                           f'{self.net_names}')
        return net

    def _set_active_norm(self, net: str) -> None:
        for m in self.modules():
            if isinstance(m, PrivateBatchNorm2d):
                m.active_net = net

    # ------------------------------------------------------------------ #
    # forward
    # ------------------------------------------------------------------ #
    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        return self.maxpool(x)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        """Run the full net; same outputs as :class:`ResNet`."""
        return self.forward_nets(x, [FULL_NET])[0]

    def _forward_block(self, stage: int, block: int, x: torch.Tensor,
                       net: str) -> torch.Tensor:
        """Run block ``block`` of stage ``stage`` on ``x`` as ``net`` (with
        that net's running statistics if ``private_norm='stats'``)."""
        module = getattr(self, self.res_layers[stage])[block]
        norms = self._stats_norms.get((stage, block))
        if not norms:
            return module(x)
        for norm in norms:
            norm.active_net = net
        try:
            return module(x)
        finally:
            for norm in norms:
                norm.active_net = FULL_NET

    def forward_nets(self,
                     x: torch.Tensor,
                     nets: Optional[Sequence[str]] = None
                     ) -> List[Tuple[torch.Tensor]]:
        """Run several nets on one batch.

        Args:
            x (Tensor): Input images, ``(N, C, H, W)``.
            nets (Sequence[str], optional): Nets to run. Defaults to all.

        Returns:
            list[tuple[Tensor]]: For each net, its stage outputs at
            ``out_indices`` (as :meth:`ResNet.forward` returns them).
        """
        nets = [self._check_net(n) for n in (nets or self.net_names)]
        outs = [dict() for _ in nets]
        if self.private_norm is True:
            # Norms differ from the stem on: nothing can be shared.
            for i, net in enumerate(nets):
                self._set_active_norm(net)
                self._run_tree(self._forward_stem(x),
                               [(i, self._paths[net])], 0, outs, nets)
            self._set_active_norm(FULL_NET)
        else:
            items = [(i, self._paths[net]) for i, net in enumerate(nets)]
            self._run_tree(self._forward_stem(x), items, 0, outs, nets)
        return [
            tuple(out[s] for s in sorted(out))
            for out in outs
        ]

    def _run_tree(self, x: torch.Tensor, items: list, pos: int,
                  outs: List[dict], nets: List[str]) -> None:
        """Run the block paths ``items`` (``(slot, path)`` pairs that agree on
        ``path[:pos]``; ``x`` is the output of that common prefix; ``slot``
        indexes ``outs`` and ``nets``), computing every shared block once."""
        groups = OrderedDict()
        for slot, path in items:
            if pos < len(path):
                groups.setdefault(path[pos], []).append((slot, path))
        for (stage, block), members in groups.items():
            y = self._forward_block(stage, block, x, nets[members[0][0]])
            if stage in self.out_indices:
                for slot, path in members:
                    if pos + 1 == len(path) or path[pos + 1][0] != stage:
                        outs[slot][stage] = y
            self._run_tree(y, members, pos + 1, outs, nets)

    def train(self, mode: bool = True):
        super().train(mode)
        return self


@MODELS.register_module()
class DepthDynamicResNetCIFAR(DepthDynamicResNet, ResNet_CIFAR):
    """CIFAR-style :class:`DepthDynamicResNet`: 3x3 stem with stride 1 and no
    max-pool, as :class:`mmpretrain.models.ResNet_CIFAR`.

    Args:
        Same as :class:`DepthDynamicResNet` (``deep_stem`` must be False).
    """

    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.norm1(self.conv1(x)))

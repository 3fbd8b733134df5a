# Copyright (c) mmekd contributors. All rights reserved.
"""Depth-level dynamic ResNet: one weight-shared full ResNet that contains
shallower sub-nets (fewer blocks per stage, same block type)."""
import inspect
import warnings
from contextlib import nullcontext
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.models.backbones import ResNet, ResNet_CIFAR
from mmpretrain.models.backbones.resnet import Bottleneck
from torch.nn.modules.batchnorm import _NormBase

from mmekd.registry import MODELS
from mmekd.vocabulary import FULL_NET
from .depth_dynamic import DepthDynamicMixin
from .net_tree import SubNetSpec
from .per_net_norm import (PrivateBatchNorm2d, PrivateStatsBatchNorm2d,
                           per_net_norms, use_net)

# norm_sharing -> what the code calls private_norm (False | 'stats' | True).
NORM_SHARING = {'shared': False, 'stats': 'stats', 'private': True}


@MODELS.register_module()
class DepthDynamicResNet(DepthDynamicMixin, ResNet):
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
        sub_stage_blocks (Sequence): The sub-nets' blocks per stage (as
            ``stage_blocks`` is the full net's): one entry per sub-net, each
            with one item per stage, a block count ``k`` (``1 <= k <=`` the
            stage's blocks in the full net) or an explicit sorted list of
            block indices that starts with 0 (block 0 holds the stride and
            the projection). Defaults to ``()`` (full net only).
        block_choice (str): Which ``k`` blocks a count keeps: ``'first'``
            (blocks ``0..k-1``, default) or ``'spread'`` (block 0 and the
            others evenly spread to the end of the stage).
        norm_sharing (str): What of BatchNorm the nets share.
            ``'stats'`` (default): the weights; the running statistics are
            per net. Training is unchanged (batch statistics), but a block
            that nets reach with different inputs keeps one set of
            statistics per input, so each net is tested with statistics of
            its own activations instead of a mixture of all nets' (see
            :class:`PrivateStatsBatchNorm2d`). ``'shared'``: everything,
            statistics included. ``'private'``: nothing, every sub-net gets
            its own BatchNorm layers (then nothing is computed once for
            several nets). Convolutions are always shared.
        private_norm (bool | str, optional): The former name of
            ``norm_sharing`` (``False`` = ``'shared'``, ``'stats'``,
            ``True`` = ``'private'``); still accepted, with a warning, and it
            wins over ``norm_sharing`` when set (old ``--cfg-options`` keep
            working).
        sub_depths (Sequence, optional): The former name of
            ``sub_stage_blocks``; still accepted, with a warning, and it wins
            over ``sub_stage_blocks`` when set.
        stage_blocks (Sequence[int], optional): Override the full net's
            blocks per stage (block type still follows ``depth``), e.g.
            ``depth=34, stage_blocks=(3, 3, 3, 3)``. Defaults to None.
        drop_path (str): With ``drop_path_rate > 0``: ``'full_net'``
            (default) gives every net the full net's rate of each block;
            ``'per_net'`` the rates a stock ResNet of its own depth gets.
        **kwargs: Other arguments of :class:`mmpretrain.models.ResNet`.
    """

    def __init__(self,
                 depth: int,
                 sub_stage_blocks: Sequence[SubNetSpec] = (),
                 block_choice: str = 'first',
                 norm_sharing: str = 'stats',
                 private_norm: Optional[Union[bool, str]] = None,
                 stage_blocks: Optional[Sequence[int]] = None,
                 sub_depths: Optional[Sequence[SubNetSpec]] = None,
                 drop_path: str = 'full_net',
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
        if private_norm is not None:
            old = {False: 'shared', 'stats': 'stats', True: 'private'}
            if private_norm not in old or (private_norm is not True
                                           and private_norm is not False
                                           and private_norm != 'stats'):
                raise ValueError("private_norm must be False, 'stats' or "
                                 f'True, got {private_norm!r}')
            warnings.warn(
                f'backbone.private_norm is deprecated: private_norm='
                f"{private_norm!r} is norm_sharing='{old[private_norm]}'",
                DeprecationWarning, stacklevel=2)
            norm_sharing = old[private_norm]
        if norm_sharing not in NORM_SHARING:
            raise ValueError(f'norm_sharing must be one of '
                             f'{list(NORM_SHARING)}, got {norm_sharing!r}')
        self.norm_sharing = norm_sharing
        # The same as False | 'stats' | True, for the code below.
        private_norm = self.private_norm = NORM_SHARING[norm_sharing]

        field = 'sub_stage_blocks'
        if sub_depths is not None:
            warnings.warn(
                'backbone.sub_depths is deprecated: it is named '
                'sub_stage_blocks now (as stage_blocks is the full net\'s)',
                DeprecationWarning, stacklevel=2)
            sub_stage_blocks, field = sub_depths, 'sub_depths'
        self.init_nets(self.stage_blocks, sub_stage_blocks, block_choice,
                       field=field, arch=f'depth {self.depth}',
                       drop_path_rate=kwargs.get('drop_path_rate', 0.0),
                       drop_path=drop_path)
        if private_norm == 'stats':
            self._make_private_stats()
        elif private_norm:
            self._make_private_norms()

    # ------------------------------------------------------------------ #
    # construction
    # ------------------------------------------------------------------ #
    def _make_private_norms(self) -> None:
        """Replace every BatchNorm2d by a :class:`PrivateBatchNorm2d` that
        holds a copy for each sub-net running through it."""
        users = {}  # module name prefix -> nets using it
        for name, blocks in self.tree.net_blocks.items():
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

    def _make_private_stats(self) -> None:
        """Replace the BatchNorm2d of every block that nets reach with
        different inputs by a :class:`PrivateStatsBatchNorm2d`. The stem and
        a common leading part see one input and keep plain BatchNorm."""
        for (stage, block), groups in self.tree.input_groups().items():
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
            self.add_per_net_modules(stage, block, norms)

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
    # the family (see DepthDynamicMixin)
    # ------------------------------------------------------------------ #
    def block_module(self, stage: int, block: int) -> nn.Module:
        return getattr(self, self.res_layers[stage])[block]

    def block_prefix(self, stage: int, block: int) -> str:
        return f'{self.res_layers[stage]}.{block}.'

    def use_net(self, net: str):
        """A context in which every per-net norm of the backbone runs as
        ``net`` (``private_norm=True``: the whole net, stem included, runs
        with its own norms)."""
        return use_net((m for _, m in per_net_norms(self)), net)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem (everything before the first stage)."""
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        return self.maxpool(x)

    def walk_groups(self, nets: Sequence[str]) -> List[List[str]]:
        """All nets together, or (``private_norm=True``: norms differ from
        the stem on, so nothing is shared) one net per group, in the order
        of ``nets`` (names already checked)."""
        return [[n] for n in nets] if self.private_norm is True else [
            list(nets)
        ]

    def group_context(self, group: Sequence[str]):
        """Its net's norms with ``private_norm=True``."""
        if self.private_norm is True:
            return self.use_net(group[0])
        return nullcontext()

    def standard_depth(self, blocks_per_stage: Sequence[int]
                       ) -> Optional[int]:
        """The MMPretrain ResNet depth with this backbone's block type and
        these blocks per stage (e.g. ``[2, 2, 2, 2]`` -> 18), or None."""
        for depth, (block, blocks) in ResNet.arch_settings.items():
            if block is self.block and tuple(blocks) == tuple(
                    blocks_per_stage):
                return depth
        return None

    def stored_types(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        return (('DepthDynamicResNet', 'DepthDynamicResNetCIFAR'),
                ('ResNet', 'ResNet_CIFAR'))

    def stored_arch(self, stored: dict, kind: str) -> Tuple[tuple, str]:
        depth = stored.get('depth')
        blocks = (stored.get('stage_blocks')
                  if kind in self.stored_types()[0] else None)
        block, default = ResNet.arch_settings.get(depth, (None, None))
        blocks = default if blocks is None else blocks
        key = (tuple(blocks) if isinstance(blocks, (list, tuple)) else
               blocks, getattr(block, '__name__', None))
        return key, f'of depth {depth!r} with blocks per stage {blocks!r}'

    def built_arch(self) -> Tuple[tuple, str]:
        return ((tuple(self.stage_blocks), self.block.__name__),
                f'of depth {self.depth} with {list(self.stage_blocks)}')

    def net_arch_name(self, net: str) -> str:
        """E.g. ``'resnet18'`` (``'resnet10'`` for BasicBlock ``[1,1,1,1]``):
        convolutions on the main path, 2 per BasicBlock, 3 per Bottleneck,
        plus the stem and the classifier."""
        per_block = 3 if issubclass(self.block, Bottleneck) else 2
        return 'resnet%d' % (per_block * sum(self.blocks_per_stage(net)) + 2)

    def plain_backbone_cfg(self, net: str, src: dict) -> dict:
        """MMPretrain's ``ResNet`` / ``ResNet_CIFAR`` of the net's depth when
        it is a standard one, else a single-net
        ``mmekd.DepthDynamicResNet(CIFAR)`` (``stage_blocks=...``)."""
        cifar = isinstance(self, ResNet_CIFAR)
        dynamic = ('type', 'init_cfg', 'depth', *dynamic_only_args())
        cfg = {k: v for k, v in src.items() if k not in dynamic}
        blocks = self.blocks_per_stage(net)
        depth = self.standard_depth(blocks)
        if depth is not None:
            cfg = dict(type='ResNet_CIFAR' if cifar else 'ResNet',
                       depth=depth, **cfg)
        else:
            cfg = dict(type=('mmekd.DepthDynamicResNetCIFAR'
                             if cifar else 'mmekd.DepthDynamicResNet'),
                       depth=self.depth, stage_blocks=list(blocks), **cfg)
        # The classifier reads the last stage only.
        cfg['out_indices'] = (self.num_stages - 1, )
        return cfg

    def train(self, mode: bool = True):
        super().train(mode)
        return self


def dynamic_only_args() -> Tuple[str, ...]:
    """The arguments of :class:`DepthDynamicResNet` that MMPretrain's
    ``ResNet`` does not take (asked from the signatures, not listed)."""
    own = inspect.signature(DepthDynamicResNet.__init__).parameters
    plain = inspect.signature(ResNet.__init__).parameters
    return tuple(k for k in own if k not in plain and k != 'kwargs')


@MODELS.register_module()
class DepthDynamicResNetCIFAR(DepthDynamicResNet, ResNet_CIFAR):
    """CIFAR-style :class:`DepthDynamicResNet`: 3x3 stem with stride 1 and no
    max-pool, as :class:`mmpretrain.models.ResNet_CIFAR`.

    Args:
        Same as :class:`DepthDynamicResNet` (``deep_stem`` must be False).
    """

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.norm1(self.conv1(x)))

# Copyright (c) mmekd contributors. All rights reserved.
"""Depth-level dynamic ConvNeXt: ConvNeXt-S ``[3, 3, 27, 3]`` containing
ConvNeXt-T ``[3, 3, 9, 3]`` (same channels), or any nesting of one width."""
from typing import Sequence

import torch
import torch.nn as nn
from mmpretrain.models.backbones import ConvNeXt

from mmekd.registry import MODELS
from .depth_dynamic import DepthDynamicMixin, check_shared_norms, stock_arch
from .net_tree import SubNetSpec


@MODELS.register_module()
class DepthDynamicConvNeXt(DepthDynamicMixin, ConvNeXt):
    """A :class:`mmpretrain.models.ConvNeXt` (v1, or v2 with
    ``use_grn=True, layer_scale_init_value=0``) whose sub-nets keep fewer
    blocks per stage and share all weights with it. Stock parameter names:
    MMPretrain's ConvNeXt weights of the full arch load into the full net.

    Each net runs the stem, then per stage the downsample layer and its
    blocks; a stage's output is the stock one (the stage's final norm, after
    global pooling with ``gap_before_final_norm``), its spatial map for
    attention distillation the last block's output before any norm or
    pooling.

    Args:
        arch (str | dict): The full net, as for ConvNeXt. Defaults to
            ``'small'``.
        sub_stage_blocks (Sequence): The sub-nets' blocks per stage (see
            :class:`mmekd.DepthDynamicResNet`), e.g. ``[[3, 3, 9, 3]]``
            (ConvNeXt-T in ConvNeXt-S).
        block_choice (str): ``'first'`` (default) or ``'spread'``.
        norm_sharing (str): ``'shared'`` only: LayerNorm has no running
            statistics, every norm is shared by the nets that run it.
        drop_path (str): ``'per_net'`` (default): every net gets the drop
            path rates a stock ConvNeXt of its depth gets from
            ``drop_path_rate``; ``'full_net'``: the full net's.
        **kwargs: Other arguments of ConvNeXt.
    """

    def __init__(self,
                 arch='small',
                 sub_stage_blocks: Sequence[SubNetSpec] = (),
                 block_choice: str = 'first',
                 norm_sharing: str = 'shared',
                 drop_path: str = 'per_net',
                 drop_path_rate: float = 0.,
                 **kwargs):
        check_shared_norms(norm_sharing, 'ConvNeXt')
        super().__init__(arch=arch, drop_path_rate=drop_path_rate, **kwargs)
        self.norm_sharing = norm_sharing
        self.init_nets(self.depths, sub_stage_blocks, block_choice,
                       arch=f'{arch} {list(self.depths)}'
                       if isinstance(arch, str) else str(list(self.depths)),
                       drop_path_rate=drop_path_rate, drop_path=drop_path)

    @property
    def default_distill_stages(self):
        return tuple(range(self.num_stages))

    def block_module(self, stage: int, block: int) -> nn.Module:
        return self.stages[stage][block]

    def block_prefix(self, stage: int, block: int) -> str:
        return f'stages.{stage}.{block}.'

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample_layers[0](x)

    def enter_stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        return self.downsample_layers[stage](x)

    def stage_output(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        norm = getattr(self, f'norm{stage}')
        if self.gap_before_final_norm:
            return norm(x.mean([-2, -1], keepdim=True)).flatten(1)
        return norm(x)

    stock_type, arch_prefix = 'ConvNeXt', 'convnext'
    arch_keys = ('depths', 'channels')

    def net_arch(self, net: str):
        arch = dict(depths=self.blocks_per_stage(net),
                    channels=list(self.channels))
        return stock_arch(self.arch_settings, arch)

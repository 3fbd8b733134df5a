# Copyright (c) mmekd contributors. All rights reserved.
"""Depth-level dynamic Vision Transformer: a 12-layer DeiT-S / ViT-S
containing 6- and 9-layer ViTs of the same width (one stage)."""
import math
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed

from mmekd.registry import MODELS
from .depth_dynamic import DepthDynamicMixin, check_shared_norms, stock_arch
from .net_tree import SubNetSpec


@MODELS.register_module()
class DepthDynamicVisionTransformer(DepthDynamicMixin, VisionTransformer):
    """A :class:`mmpretrain.models.VisionTransformer` whose sub-nets run its
    first layers (one stage: ``sub_stage_blocks=[[6], [9]]``) and share all
    weights with it, the final norm ``ln1`` included. Stock parameter names:
    MMPretrain's ViT / DeiT weights of the full arch load into the full net.

    A net runs the patch embedding, class token and position embedding, then
    its layers; its output is the stock one after its own last layer
    (``ln1``, then ``out_type``); its spatial map for attention distillation
    the last layer's patch tokens as ``(N, C, h, w)``.

    Args:
        arch (str | dict): The full net, as for VisionTransformer. Defaults
            to ``'deit-small'``.
        sub_stage_blocks (Sequence): One entry per sub-net, each ``[k]``:
            the sub-net's layers.
        block_choice (str): ``'first'`` (default) or ``'spread'``.
        norm_sharing (str): ``'shared'`` only (LayerNorm).
        drop_path (str): ``'per_net'`` (default) or ``'full_net'`` (see
            :class:`mmekd.DepthDynamicConvNeXt`).
        out_indices (int | Sequence): The last layer only (``-1``, the
            default): every net ends at its own last layer.
        **kwargs: Other arguments of VisionTransformer.
    """

    drop_path_linspace = 'numpy'  # as VisionTransformer spreads its rates

    def __init__(self,
                 arch='deit-small',
                 sub_stage_blocks: Sequence[SubNetSpec] = (),
                 block_choice: str = 'first',
                 norm_sharing: str = 'shared',
                 drop_path: str = 'per_net',
                 drop_path_rate: float = 0.,
                 out_indices=-1,
                 **kwargs):
        check_shared_norms(norm_sharing, 'VisionTransformer')
        super().__init__(arch=arch, drop_path_rate=drop_path_rate,
                         out_indices=out_indices, **kwargs)
        if list(self.out_indices) != [self.num_layers - 1]:
            raise ValueError(
                f'out_indices {out_indices!r}: a depth-dynamic ViT outputs '
                f'the last layer of each net only; use out_indices=-1')
        self.norm_sharing = norm_sharing
        # One stage; out_indices are stages from here on.
        self.out_indices = [0]
        self.init_nets((self.num_layers, ), sub_stage_blocks, block_choice,
                       arch=f'{arch}, {self.num_layers} layers'
                       if isinstance(arch, str) else
                       f'{self.num_layers} layers',
                       drop_path_rate=drop_path_rate, drop_path=drop_path)

    num_stages = 1
    default_distill_stages = (0, )

    def block_module(self, stage: int, block: int) -> nn.Module:
        return self.layers[block]

    def block_prefix(self, stage: int, block: int) -> str:
        return f'layers.{block}.'

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x, patch_resolution = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x),
                          dim=1)
        x = x + resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            patch_resolution,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        return self.pre_norm(self.drop_after_pos(x))

    def _grid(self, x: torch.Tensor) -> Tuple[int, int]:
        """The patch grid of token tensor ``x``: the configured one, or a
        square one for another input size."""
        tokens = x.shape[1] - self.num_extra_tokens
        if tokens == self.patch_resolution[0] * self.patch_resolution[1]:
            return tuple(self.patch_resolution)
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(
                f'{tokens} patch tokens: a depth-dynamic ViT maps a '
                f'non-square patch grid only at its img_size '
                f'({self.img_size})')
        return side, side

    def stage_output(self, stage: int, x: torch.Tensor):
        if self.final_norm:
            x = self.ln1(x)
        return self._format_output(x, self._grid(x))

    def stage_map(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        tokens = x[:, self.num_extra_tokens:]
        return tokens.transpose(1, 2).reshape(x.shape[0], x.shape[2],
                                              *self._grid(x))

    stock_type, arch_prefix = 'VisionTransformer', 'vit'
    arch_table, depth_key = 'arch_zoo', 'num_layers'
    arch_keys = ('embed_dims', 'num_layers', 'num_heads',
                 'feedforward_channels')

    def net_arch(self, net: str):
        settings = self.arch_settings
        arch = dict(embed_dims=self.embed_dims,
                    num_layers=self.blocks_per_stage(net)[0],
                    num_heads=settings['num_heads'],
                    feedforward_channels=settings['feedforward_channels'])
        return stock_arch(self.arch_zoo, arch,
                          prefer=str(self._arch_name).split('-')[0])

    @property
    def _arch_name(self) -> str:
        for name, value in self.arch_zoo.items():
            if value is self.arch_settings:
                return name
        return ''

    def custom_arch_name(self, arch: dict) -> str:
        return f"{arch['num_layers']}l"

    def plain_backbone_cfg(self, net: str, src: dict) -> dict:
        return dict(super().plain_backbone_cfg(net, src), out_indices=-1)

# Copyright (c) mmekd contributors. All rights reserved.
"""Depth-level dynamic Swin Transformer: Swin-S ``[2, 2, 18, 2]`` containing
Swin-T ``[2, 2, 6, 2]`` (same embedding and heads)."""
from typing import Sequence

import torch
import torch.nn as nn
from mmpretrain.models.backbones import SwinTransformer
from mmpretrain.models.utils import resize_pos_embed

from mmekd.registry import MODELS
from .depth_dynamic import DepthDynamicMixin, check_shared_norms, stock_arch
from .net_tree import SubNetSpec


@MODELS.register_module()
class DepthDynamicSwinTransformer(DepthDynamicMixin, SwinTransformer):
    """A :class:`mmpretrain.models.SwinTransformer` whose sub-nets keep
    fewer blocks per stage and share all weights with it. Stock parameter
    names: MMPretrain's Swin weights of the full arch load into the full net.

    Swin shifts its windows in every odd block of a stage: a sub-net's
    ``k``-th block of a stage must be an odd block exactly when ``k`` is odd,
    which the first ``k`` blocks are (``block_choice='first'``); blocks that
    break the alternation (most ``'spread'`` choices, some explicit lists)
    are refused. A net runs the patch embedding, then per stage its blocks
    and the stage's patch merging; a stage's output is the stock one (its
    norm, ``NCHW``), its spatial map for attention distillation the last
    block's tokens as ``NCHW``. Between blocks the tokens travel as
    ``(N, H, W, C)``.

    Args:
        arch (str | dict): The full net, as for SwinTransformer. Defaults to
            ``'small'``.
        sub_stage_blocks (Sequence): The sub-nets' blocks per stage, e.g.
            ``[[2, 2, 6, 2]]`` (Swin-T in Swin-S).
        block_choice (str): ``'first'`` (default); ``'spread'`` only where
            it keeps the shift alternation.
        norm_sharing (str): ``'shared'`` only (LayerNorm).
        drop_path (str): ``'per_net'`` (default) or ``'full_net'`` (see
            :class:`mmekd.DepthDynamicConvNeXt`).
        **kwargs: Other arguments of SwinTransformer
            (``out_after_downsample=True`` is refused: a stage's output is
            taken before its patch merging).
    """

    def __init__(self,
                 arch='small',
                 sub_stage_blocks: Sequence[SubNetSpec] = (),
                 block_choice: str = 'first',
                 norm_sharing: str = 'shared',
                 drop_path: str = 'per_net',
                 drop_path_rate: float = 0.1,
                 **kwargs):
        check_shared_norms(norm_sharing, 'SwinTransformer')
        if kwargs.get('out_after_downsample'):
            raise ValueError(
                'out_after_downsample=True is not supported by '
                'DepthDynamicSwinTransformer: its stage outputs are taken '
                'before the patch merging (the stock default)')
        super().__init__(arch=arch, drop_path_rate=drop_path_rate, **kwargs)
        self.norm_sharing = norm_sharing
        self.init_nets(self.depths, sub_stage_blocks, block_choice,
                       arch=f'{arch} {list(self.depths)}'
                       if isinstance(arch, str) else str(list(self.depths)),
                       drop_path_rate=drop_path_rate, drop_path=drop_path)
        self._check_shift_alternation()

    def _check_shift_alternation(self) -> None:
        for net, blocks in self.net_blocks.items():
            for stage, indices in enumerate(blocks):
                bad = [(k, b) for k, b in enumerate(indices) if b % 2 != k % 2]
                if bad:
                    k, b = bad[0]
                    raise ValueError(
                        f'sub-net {net!r} runs blocks {list(indices)} of '
                        f'stage {stage}: its block {k} would be block {b}, '
                        f'which {"shifts" if b % 2 else "does not shift"} '
                        'its windows, but a Swin block shifts them exactly '
                        'when its position in the stage is odd. Use '
                        "block_choice='first' or block indices that "
                        'alternate (even, odd, even, ...)')

    @property
    def default_distill_stages(self):
        return tuple(range(self.num_layers))

    @property
    def num_stages(self) -> int:
        return self.num_layers

    def block_module(self, stage: int, block: int) -> nn.Module:
        return self.stages[stage].blocks[block]

    def block_prefix(self, stage: int, block: int) -> str:
        return f'stages.{stage}.blocks.{block}.'

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + resize_pos_embed(
                self.absolute_pos_embed, self.patch_resolution, hw_shape,
                self.interpolate_mode, self.num_extra_tokens)
        x = self.drop_after_pos(x)
        return x.reshape(x.shape[0], *hw_shape, x.shape[-1])

    def enter_stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        x, hw_shape = self.stages[stage - 1].downsample(
            x.reshape(n, h * w, c), (h, w))
        return x.reshape(n, *hw_shape, x.shape[-1])

    def run_block(self, stage: int, block: int,
                  x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        y = self.block_module(stage, block)(x.reshape(n, h * w, c), (h, w))
        return y.reshape(n, h, w, c)

    def stage_output(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        out = getattr(self, f'norm{stage}')(x.reshape(n, h * w, c))
        return out.view(-1, h, w, c).permute(0, 3, 1, 2).contiguous()

    def stage_map(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)

    stock_type, arch_prefix = 'SwinTransformer', 'swin'
    arch_table, arch_keys = 'arch_zoo', ('embed_dims', 'depths', 'num_heads')

    def net_arch(self, net: str):
        arch = dict(embed_dims=self.embed_dims,
                    depths=self.blocks_per_stage(net),
                    num_heads=list(self.num_heads))
        return stock_arch(self.arch_zoo, arch)

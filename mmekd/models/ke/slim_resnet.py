# Copyright (c) mmekd contributors. All rights reserved.
"""ResNets with explicit per-stage widths: the physically narrow networks
that Knowledge Evolution's KELS fit hypothesis extracts to."""
from typing import Optional, Sequence

from mmcv.cnn import build_conv_layer, build_norm_layer
from mmpretrain.models.backbones import ResNet, ResNet_CIFAR
from mmpretrain.models.backbones.resnet import (BasicBlock, Bottleneck,
                                                ResLayer)

from mmekd.registry import MODELS


class SlimBottleneck(Bottleneck):
    """A :class:`Bottleneck` whose middle width is given explicitly instead
    of ``out_channels // expansion`` (``ceil(s*64)=52`` and
    ``ceil(s*256)=205`` at ``s=0.8`` are not a 4x pair).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels (of ``conv3``).
        mid_channels (int): Output channels of ``conv1`` and ``conv2``.
        **kwargs: Other arguments of :class:`Bottleneck` (``expansion`` is
            ignored).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 mid_channels: int, **kwargs):
        kwargs.pop('expansion', None)
        super().__init__(in_channels, out_channels, expansion=1, **kwargs)
        # Rebuild the layers whose width differs; same names and order.
        self.mid_channels = mid_channels
        conv_cfg, norm_cfg = self.conv_cfg, self.norm_cfg
        self.conv1 = build_conv_layer(
            conv_cfg, in_channels, mid_channels, kernel_size=1,
            stride=self.conv1_stride, bias=False)
        self.add_module(self.norm1_name,
                        build_norm_layer(norm_cfg, mid_channels, 1)[1])
        self.conv2 = build_conv_layer(
            conv_cfg, mid_channels, mid_channels, kernel_size=3,
            stride=self.conv2_stride, padding=self.dilation,
            dilation=self.dilation, bias=False)
        self.add_module(self.norm2_name,
                        build_norm_layer(norm_cfg, mid_channels, 2)[1])
        self.conv3 = build_conv_layer(
            conv_cfg, mid_channels, out_channels, kernel_size=1, bias=False)


@MODELS.register_module()
class SlimResNet(ResNet):
    """ResNet with explicit stem and per-stage widths.

    Same module names, order and forward as :class:`ResNet` (so a dense
    ResNet's weights slice into it by prefix), but every stage ``i`` has
    its own middle width ``mid_channels[i]`` (conv1/conv2 of a block) and
    output width ``out_channels[i]``, with no ratio imposed between them or
    between stages. Knowledge Evolution's slim network of a ResNet with
    split rate ``s`` has ``stem_channels=ceil(s*64)``,
    ``mid_channels[i]=ceil(s*64*2**i)`` and
    ``out_channels[i]=ceil(s*64*2**i*expansion)``.

    Args:
        depth (int): 18, 34 (BasicBlock) or 50, 101, 152 (Bottleneck).
        stem_channels (int): Output channels of the stem.
        mid_channels (Sequence[int]): Middle width of the blocks of each
            stage. Must equal ``out_channels`` for BasicBlock ResNets.
        out_channels (Sequence[int]): Output width of each stage.
        stage_blocks (Sequence[int], optional): Blocks per stage, to override
            those of ``depth`` (block type still follows ``depth``), e.g. the
            slim form of a DDNN sub-net ``[1, 2, 1, 1]``. Defaults to None.
        **kwargs: Other arguments of :class:`ResNet` (``strides``,
            ``out_indices``, ``norm_cfg``...); ``base_channels``,
            ``expansion``, ``deep_stem`` and ``avg_down`` are not supported.

    Example:
        >>> import torch
        >>> from mmekd.models import SlimResNet
        >>> net = SlimResNet(50, stem_channels=52,
        ...                  mid_channels=(52, 103, 205, 410),
        ...                  out_channels=(205, 410, 820, 1639)).eval()
        >>> net(torch.rand(1, 3, 64, 64))[-1].shape
        torch.Size([1, 1639, 2, 2])
    """

    def __init__(self,
                 depth: int,
                 stem_channels: int,
                 mid_channels: Sequence[int],
                 out_channels: Sequence[int],
                 num_stages: int = 4,
                 stage_blocks: Optional[Sequence[int]] = None,
                 **kwargs):
        if depth not in ResNet.arch_settings:
            raise ValueError(f'depth must be one of '
                             f'{sorted(ResNet.arch_settings)}, got {depth!r}')
        for key in ('base_channels', 'expansion', 'deep_stem', 'avg_down'):
            if kwargs.get(key):
                raise ValueError(f'{type(self).__name__} does not support '
                                 f'{key}={kwargs[key]!r}; give explicit '
                                 'widths instead')
            kwargs.pop(key, None)
        mid_channels = [int(c) for c in mid_channels]
        out_channels = [int(c) for c in out_channels]
        if not len(mid_channels) == len(out_channels) == num_stages:
            raise ValueError(
                f'mid_channels ({mid_channels}) and out_channels '
                f'({out_channels}) need one width per stage '
                f'(num_stages={num_stages})')
        if min(mid_channels + out_channels + [stem_channels]) < 1:
            raise ValueError('all widths must be positive')
        block, default_blocks = ResNet.arch_settings[depth]
        if stage_blocks is None:
            stage_blocks = default_blocks
        else:
            stage_blocks = tuple(int(b) for b in stage_blocks)
            if len(stage_blocks) != len(default_blocks) or min(
                    stage_blocks) < 1:
                raise ValueError(
                    f'stage_blocks must have {len(default_blocks)} positive '
                    f'counts, got {list(stage_blocks)}')
        if block is BasicBlock and mid_channels != out_channels:
            raise ValueError(
                f'depth {depth} uses BasicBlock, whose middle width equals '
                f'its output width: mid_channels {mid_channels} must equal '
                f'out_channels {out_channels}')
        # An instance-level table makes ResNet build these blocks (a
        # SlimBottleneck takes its middle width explicitly).
        self.arch_settings = {
            depth: (SlimBottleneck if block is Bottleneck else block,
                    stage_blocks)
        }
        self._widths = list(zip(mid_channels, out_channels))
        self._stage = 0
        super().__init__(
            depth, stem_channels=stem_channels, num_stages=num_stages,
            **kwargs)
        self.mid_channels = mid_channels
        self.out_channels = out_channels

    def make_res_layer(self, **kwargs) -> ResLayer:
        # ResNet passes uniform widths (base * 2**i); use the explicit ones.
        i = self._stage
        self._stage += 1
        mid, out = self._widths[i]
        kwargs['in_channels'] = (
            self.stem_channels if i == 0 else self._widths[i - 1][1])
        kwargs['out_channels'] = out
        if issubclass(kwargs['block'], SlimBottleneck):
            kwargs['mid_channels'] = mid
        return ResLayer(**kwargs)

    def train(self, mode: bool = True) -> 'SlimResNet':
        super().train(mode)
        return self


@MODELS.register_module()
class SlimResNetCIFAR(SlimResNet, ResNet_CIFAR):
    """CIFAR-style :class:`SlimResNet`: 3x3 stem with stride 1 and no
    max-pool, as :class:`mmpretrain.models.ResNet_CIFAR`.

    Args:
        Same as :class:`SlimResNet`.
    """

# Copyright (c) mmekd contributors. All rights reserved.
"""The Knowledge Evolution split of a network into a fit hypothesis (kept
across generations) and a reset hypothesis (re-drawn between generations).

Taha et al., "Knowledge Evolution in Neural Networks", CVPR 2021. The split
is drawn once and never changes. It is stored compactly:

* ``kels`` (kernel-level, convolution-aware): two integers per layer, the
  kept output and input channels ``(ceil(s*C_out), ceil(s*C_in))``; the fit
  hypothesis is the prefix block ``weight[:k_out, :k_in]``.
* ``wels`` (weight-level): one bit per weight (and bias), packed in uint8
  tensors, drawn from a seeded generator.
"""
import inspect
import math
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from mmpretrain.models.backbones import (ConvNeXt, SwinTransformer,
                                        VisionTransformer)
from torch.nn.modules.instancenorm import _InstanceNorm

from mmekd.utils.numbers import config_number

SPLIT_MODES = ('kels', 'wels')
# Layers that own parameters but are never split: their parameters (and
# statistics) are part of both hypotheses and carry over unchanged.
_CARRIED_LAYERS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)


# Backbones built of LayerNorm transformers / ConvNeXt blocks: Knowledge
# Evolution's split is for convolutional networks (tested on ResNets).
_LAYER_NORM_FAMILIES = (ConvNeXt, SwinTransformer, VisionTransformer)


def check_ke_support(model: nn.Module) -> None:
    """Raise :class:`TypeError` for a model Knowledge Evolution does not
    support: a LayerNorm family backbone (ConvNeXt, Swin, ViT, their
    depth-dynamic forms)."""
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, _LAYER_NORM_FAMILIES):
        raise TypeError(
            f'Knowledge Evolution supports convolutional ResNet-family '
            'models (ImageClassifier with ResNet / ResNet_CIFAR, or a DDNN '
            'with mmekd.DepthDynamicResNet(CIFAR)); the backbone is '
            f'{type(backbone).__name__}, a LayerNorm family whose split '
            'is not defined (KELS prunes convolution channels)')


def keep_count(rate: float, channels: int) -> int:
    """Channels a KELS split keeps: ``math.ceil(rate * channels)`` in
    floating point, exactly as the official code computes it (so, e.g.,
    ``keep_count(0.07, 100) == 8`` because ``0.07 * 100`` is
    ``7.000000000000001``), and at least 1."""
    return max(1, math.ceil(rate * channels))


def check_split_rate(rate: float) -> float:
    """Validate a split rate ``s`` in ``(0, 1]``."""
    return config_number(rate, 'split_rate', positive=True, maximum=1.0)


def _pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor into uint8 (8 elements per byte, flattened,
    first element in the lowest bit)."""
    packed = np.packbits(mask.detach().cpu().numpy().reshape(-1),
                         bitorder='little')
    return torch.from_numpy(packed)


def _unpack_bits(packed: torch.Tensor, shape: Tuple[int]) -> torch.Tensor:
    """Inverse of :func:`_pack_bits`."""
    bits = np.unpackbits(packed.cpu().numpy(), count=math.prod(shape),
                         bitorder='little')
    return torch.from_numpy(bits.astype(bool)).view(shape)


def split_layers(model: nn.Module,
                 mode: str) -> 'OrderedDict[str, nn.Module]':
    """The layers a split applies to, in module order.

    Convolutions and linear layers are split; normalisation layers are
    carried over. Any other module that owns parameters has no split rule.

    Args:
        model (nn.Module): The network.
        mode (str): ``'kels'`` or ``'wels'``.

    Returns:
        OrderedDict[str, nn.Module]: Module name to layer.

    Raises:
        TypeError: A module whose split rule is unknown, named in the
            message: grouped/depthwise or transposed convolutions under
            ``kels``, or any other layer type that owns parameters.
    """
    layers = OrderedDict()
    for name, module in model.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if not own or isinstance(module, _CARRIED_LAYERS):
            continue
        if isinstance(module, nn.Linear):
            layers[name] = module
        elif isinstance(module, _ConvNd):
            if mode == 'kels' and (module.transposed or module.groups != 1):
                kind = 'transposed' if module.transposed else \
                    f'grouped (groups={module.groups})'
                raise TypeError(
                    f"Knowledge Evolution split_mode='kels' has no split "
                    f"rule for the {kind} convolution {name!r} "
                    f'({type(module).__name__}): the kernel-level prefix '
                    "rule needs groups=1. Use split_mode='wels'.")
            layers[name] = module
        else:
            raise TypeError(
                f'Knowledge Evolution has no split rule for module {name!r} '
                f'({type(module).__name__}), which owns parameters {own}. '
                'Supported: Conv (groups=1 for kels), Linear; BatchNorm, '
                'GroupNorm, LayerNorm and InstanceNorm are carried over.')
    return layers


class KESplit:
    """A fixed fit/reset split of a network's convolution and linear weights.

    Build it with :meth:`from_model`; save and restore it with
    :meth:`state_dict` / :meth:`from_state_dict`.

    KELS rules (first ``ceil(s*C)`` channels, see :func:`keep_count`):

    * every convolution keeps ``weight[:ceil(s*C_out), :ceil(s*C_in)]``;
    * the stem (the first convolution in module order) keeps all input
      (image) channels;
    * classifiers (linear layers inside ``model.head``, or the last linear
      layer of a model without ``head``) keep all outputs (classes);
    * projection shortcuts follow the same prefix rule, so the kept channels
      of a residual addition agree.

    Args:
        mode (str): ``'kels'`` or ``'wels'``.
        rate (float): Split rate ``s`` in ``(0, 1]``.
        seed (int): Seed of the WELS draw (and of the re-initialisations).
        layers (dict): Per layer: ``shape`` (weight shape) and ``keep``
            (KELS ``[k_out, k_in]``) or ``weight_bits`` / ``bias_bits``
            (WELS packed masks).
    """

    def __init__(self, mode: str, rate: float, seed: int,
                 layers: Dict[str, dict]):
        if mode not in SPLIT_MODES:
            raise ValueError(f'split_mode must be one of {SPLIT_MODES}, got '
                             f'{mode!r}')
        self.mode = mode
        self.rate = check_split_rate(rate)
        self.seed = int(seed)
        self.layers = OrderedDict(layers)

    @classmethod
    def from_model(cls, model: nn.Module, mode: str, rate: float,
                   seed: int) -> 'KESplit':
        """Draw the split of ``model``.

        Args:
            model (nn.Module): The network (a classifier with ``head`` or any
                module).
            mode (str): ``'kels'`` or ``'wels'``.
            rate (float): Split rate ``s`` in ``(0, 1]``.
            seed (int): Seed of the WELS draw.
        """
        if mode not in SPLIT_MODES:
            raise ValueError(f'split_mode must be one of {SPLIT_MODES}, got '
                             f'{mode!r}')
        rate = check_split_rate(rate)
        modules = split_layers(model, mode)
        if not modules:
            raise ValueError('Knowledge Evolution found no convolution or '
                             f'linear layer in {type(model).__name__}')
        names = list(modules)
        if hasattr(model, 'head'):
            classifiers = {n for n in names if n.startswith('head.')}
        else:
            linears = [n for n in names if isinstance(modules[n], nn.Linear)]
            classifiers = set(linears[-1:])
        convs = [n for n in names if isinstance(modules[n], _ConvNd)]
        stem = convs[0] if convs else None
        generator = torch.Generator().manual_seed(int(seed))
        layers = OrderedDict()
        for name, m in modules.items():
            shape = list(m.weight.shape)
            if mode == 'kels':
                k_out = shape[0] if name in classifiers else keep_count(
                    rate, shape[0])
                k_in = shape[1] if name == stem else keep_count(
                    rate, shape[1])
                layers[name] = dict(shape=shape, keep=[k_out, k_in])
            else:
                # Keep a weight if u >= 1 - s, u ~ U[0, 1) (paper's code).
                def draw(n):
                    u = torch.rand(n, generator=generator)
                    return _pack_bits(u >= 1 - rate)

                layers[name] = dict(
                    shape=shape, weight_bits=draw(m.weight.numel()))
                if getattr(m, 'bias', None) is not None:
                    layers[name]['bias_bits'] = draw(m.bias.numel())
        return cls(mode, rate, seed, layers)

    def weight_mask(self, name: str) -> torch.Tensor:
        """Bool mask of layer ``name``'s weight: True = fit hypothesis."""
        info = self.layers[name]
        shape = tuple(info['shape'])
        if self.mode == 'wels':
            return _unpack_bits(info['weight_bits'], shape)
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[:info['keep'][0], :info['keep'][1]] = True
        return mask

    def bias_mask(self, name: str) -> Optional[torch.Tensor]:
        """Bool mask of layer ``name``'s bias (None for a WELS layer without
        bias)."""
        info = self.layers[name]
        if self.mode == 'wels':
            if 'bias_bits' not in info:
                return None
            return _unpack_bits(info['bias_bits'], (info['shape'][0], ))
        return torch.arange(info['shape'][0]) < info['keep'][0]

    def check_model(self, model: nn.Module) -> None:
        """Raise if ``model``'s split layers differ from this split's."""
        modules = split_layers(model, self.mode)
        shapes = {n: list(m.weight.shape) for n, m in modules.items()}
        mine = {n: list(v['shape']) for n, v in self.layers.items()}
        if shapes != mine:
            diff = sorted(
                n for n in set(shapes) | set(mine)
                if shapes.get(n) != mine.get(n))
            raise ValueError(
                'The Knowledge Evolution split does not match the model '
                f'(layers that differ: {diff[:5]}); it was drawn for another '
                'architecture.')

    def fit_ratio(self) -> float:
        """Fraction of split weights in the fit hypothesis."""
        kept = total = 0
        for name, info in self.layers.items():
            total += math.prod(info['shape'])
            if self.mode == 'kels':
                k_out, k_in = info['keep']
                kept += k_out * k_in * math.prod(info['shape'][2:])
            else:
                kept += int(self.weight_mask(name).sum())
        return kept / total

    def state_dict(self) -> dict:
        """The split as plain containers and tensors (checkpoint-safe)."""
        return dict(
            mode=self.mode, rate=self.rate, seed=self.seed,
            layers={n: dict(v) for n, v in self.layers.items()})

    @classmethod
    def from_state_dict(cls, state: dict) -> 'KESplit':
        """Inverse of :meth:`state_dict`."""
        return cls(state['mode'], state['rate'], state['seed'],
                   state['layers'])


# Re-initialisers of the reset hypothesis: name -> torch.nn.init function.
WEIGHT_INITS = {
    'kaiming_uniform': nn.init.kaiming_uniform_,
    'kaiming_normal': nn.init.kaiming_normal_,
    'normal': nn.init.normal_,
    'uniform': nn.init.uniform_,
    'constant': nn.init.constant_,
}


def check_weight_init(cfg: dict) -> dict:
    """Validate a re-initialiser config such as
    ``dict(type='kaiming_uniform', a=math.sqrt(5))``."""
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    if kind not in WEIGHT_INITS:
        raise ValueError(f'reinit_cfg type must be one of '
                         f'{sorted(WEIGHT_INITS)}, got {kind!r}')
    params = inspect.signature(WEIGHT_INITS[kind]).parameters
    bad = [k for k in cfg if k not in params or k in ('tensor', 'generator')]
    if bad:
        raise ValueError(f'reinit_cfg: {kind} does not take {bad}')
    return dict(type=kind, **cfg)


def draw_weight(shape: Tuple[int], cfg: dict,
                generator: torch.Generator) -> torch.Tensor:
    """A fresh CPU tensor of ``shape`` initialised as ``cfg`` says."""
    cfg = dict(cfg)
    fn = WEIGHT_INITS[cfg.pop('type')]
    tensor = torch.empty(shape)
    if 'generator' in inspect.signature(fn).parameters:
        cfg['generator'] = generator
    fn(tensor, **cfg)
    return tensor


@torch.no_grad()
def reset_hypothesis_(model: nn.Module,
                      split: KESplit,
                      generator: torch.Generator,
                      reinit_cfg: dict = dict(
                          type='kaiming_uniform', a=math.sqrt(5)),
                      reset_bias: bool = False,
                      reset_norm: bool = False) -> None:
    """Re-draw the reset hypothesis of ``model`` in place.

    ``weight <- M * weight + (1 - M) * W_r`` for every split layer, with
    ``W_r`` drawn by ``reinit_cfg`` from ``generator`` (on the CPU, in module
    order, so the result does not depend on the device).

    Args:
        model (nn.Module): The network the split was drawn for.
        split (KESplit): The split.
        generator (torch.Generator): Source of the new values.
        reinit_cfg (dict): Weight re-initialiser, see :data:`WEIGHT_INITS`.
            Defaults to PyTorch's layer default, kaiming-uniform with
            ``a=sqrt(5)`` (the paper's choice).
        reset_bias (bool): Also re-draw the reset part of biases, from
            PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
            Defaults to False (biases carry over, as in the paper).
        reset_norm (bool): Also reset normalisation layers' channels beyond
            the first ``ceil(s*C)`` (weight 1, bias 0, running mean 0,
            running var 1), in every set of running statistics (a DDNN's
            per-net ones too). KELS only. Defaults to False (the paper keeps
            BN parameters and statistics).
    """
    if reset_norm and split.mode != 'kels':
        raise ValueError("reset_norm=True needs split_mode='kels' (a "
                         'channel split); WELS does not split norm layers')
    modules = split_layers(model, split.mode)
    for name in split.layers:
        m = modules[name]
        new = draw_weight(tuple(m.weight.shape), reinit_cfg, generator)
        mask = split.weight_mask(name).to(m.weight.device)
        m.weight.copy_(torch.where(mask, m.weight, new.to(m.weight)))
        if reset_bias and getattr(m, 'bias', None) is not None:
            bound = 1 / math.sqrt(m.weight[0].numel())
            new = torch.empty(m.bias.shape).uniform_(
                -bound, bound, generator=generator)
            mask = split.bias_mask(name).to(m.bias.device)
            m.bias.copy_(torch.where(mask, m.bias, new.to(m.bias)))
    if reset_norm:
        for m in model.modules():
            if not isinstance(m, _CARRIED_LAYERS[:3]):
                continue
            # Every set of statistics counts, also the affine-free ones that
            # hold a DDNN net's own running statistics (``sub_stats``).
            channels = m.num_channels if isinstance(
                m, nn.GroupNorm) else m.num_features
            k = keep_count(split.rate, channels)
            if m.weight is not None:
                m.weight[k:] = 1
                m.bias[k:] = 0
            if getattr(m, 'running_mean', None) is not None:
                m.running_mean[k:] = 0
                m.running_var[k:] = 1

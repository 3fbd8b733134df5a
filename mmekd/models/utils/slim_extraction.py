# Copyright (c) mmekd contributors. All rights reserved.
"""Extract the KELS fit hypothesis of a ResNet classifier as a physically
narrow network (Knowledge Evolution's "slim" network)."""
import copy
from typing import Tuple

import torch
import torch.nn as nn
from mmpretrain.models import (GlobalAveragePooling, ImageClassifier,
                               LinearClsHead, ResNet, ResNet_CIFAR)

from mmekd.registry import MODELS
from .ke_split import KESplit, keep_count


def check_slim_support(model: nn.Module) -> None:
    """Raise :class:`TypeError` unless slim extraction knows ``model``: an
    :class:`ImageClassifier` with a plain ``ResNet`` or ``ResNet_CIFAR``
    backbone (no deep stem, no ``avg_down``), an optional
    ``GlobalAveragePooling`` neck and a ``LinearClsHead``."""
    parts = [('model', model, (ImageClassifier, )),
             ('backbone', getattr(model, 'backbone', None),
              (ResNet, ResNet_CIFAR)),
             ('head', getattr(model, 'head', None), (LinearClsHead, ))]
    if getattr(model, 'neck', None) is not None:
        parts.append(('neck', model.neck, (GlobalAveragePooling, )))
    for what, module, types in parts:
        if type(module) not in types:
            raise TypeError(
                f'Slim extraction supports ImageClassifier + ResNet/'
                f'ResNet_CIFAR + GlobalAveragePooling + LinearClsHead; the '
                f'{what} is {type(module).__name__}, whose slim form is '
                'unknown')
    if model.backbone.deep_stem or model.backbone.avg_down:
        raise TypeError('Slim extraction does not support ResNet with '
                        'deep_stem or avg_down')


def slim_model_cfg(model: nn.Module, model_cfg: dict, rate: float) -> dict:
    """The config of the slim network of ``model`` at split rate ``rate``.

    Widths are read from the dense modules: stem ``ceil(s*C_stem)``, stage
    ``i`` middle width ``ceil(s*mid_i)`` and output width ``ceil(s*out_i)``;
    the head keeps all classes and gets ``ceil(s*D)`` input features.

    Args:
        model (nn.Module): The dense classifier.
        model_cfg (dict): Its config (the ``model`` field of a config).
        rate (float): Split rate ``s``.

    Returns:
        dict: A model config with an ``mmekd.SlimResNet`` (or
        ``mmekd.SlimResNetCIFAR``) backbone.
    """
    check_slim_support(model)
    cfg = copy.deepcopy(dict(model_cfg))
    backbone = model.backbone
    stages = [getattr(backbone, n)[0] for n in backbone.res_layers]
    bb_cfg = dict(cfg['backbone'])
    for key in ('type', 'base_channels', 'expansion', 'init_cfg',
                'stem_channels', 'deep_stem', 'avg_down'):
        bb_cfg.pop(key, None)
    bb_cfg.update(
        type='mmekd.SlimResNetCIFAR'
        if isinstance(backbone, ResNet_CIFAR) else 'mmekd.SlimResNet',
        depth=backbone.depth,
        stem_channels=keep_count(rate, backbone.stem_channels),
        mid_channels=[keep_count(rate, b.mid_channels) for b in stages],
        out_channels=[keep_count(rate, b.out_channels) for b in stages])
    cfg['backbone'] = bb_cfg
    head_cfg = dict(cfg['head'])
    head_cfg.pop('init_cfg', None)
    head_cfg['in_channels'] = keep_count(rate, model.head.in_channels)
    cfg['head'] = head_cfg
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    return cfg


@torch.no_grad()
def extract_slim(model: nn.Module, model_cfg: dict,
                 rate: float) -> Tuple[dict, nn.Module]:
    """Build the slim network of ``model`` and copy its fit hypothesis.

    Every tensor of the slim state dict is the prefix slice of the dense one
    (conv ``weight[:k_out, :k_in]``, BN ``[:k]`` incl. running statistics,
    fc ``weight[:, :k_in]`` and the full fc bias). If the dense network's
    reset-hypothesis weights are zero, both networks compute the same logits.

    Args:
        model (nn.Module): The dense classifier (unwrapped).
        model_cfg (dict): Its config.
        rate (float): The KELS split rate ``s``.

    Returns:
        tuple[dict, nn.Module]: The slim model's config and the slim model
        (on ``model``'s device, in ``model``'s train/eval mode).
    """
    cfg = slim_model_cfg(model, model_cfg, rate)
    slim = MODELS.build(cfg)
    # The runner may have merged a top-level data_preprocessor into the
    # dense model only: use the dense model's, so inputs match exactly.
    slim.data_preprocessor = copy.deepcopy(model.data_preprocessor)
    dense_sd = model.state_dict()
    slim_sd = slim.state_dict()
    # The slim widths must be exactly the KELS fit hypothesis.
    split = KESplit.from_model(model, 'kels', rate, seed=0)
    for name, info in split.layers.items():
        got = list(slim_sd[f'{name}.weight'].shape[:2])
        if got != info['keep']:
            raise RuntimeError(f'slim layer {name} has {got} channels, the '
                               f"KELS fit hypothesis {info['keep']}")
    for key, value in slim_sd.items():
        if key not in dense_sd:
            raise KeyError(f'slim key {key} has no dense counterpart')
        dense = dense_sd[key]
        if dense.dim() != value.dim() or any(
                s > d for s, d in zip(value.shape, dense.shape)):
            raise RuntimeError(f'{key}: slim shape {tuple(value.shape)} does '
                               f'not fit in dense {tuple(dense.shape)}')
        value.copy_(dense[tuple(slice(0, s) for s in value.shape)])
    device = next(model.parameters()).device
    return cfg, slim.to(device).train(model.training)

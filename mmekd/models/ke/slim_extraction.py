# Copyright (c) mmekd contributors. All rights reserved.
"""Extract the KELS fit hypothesis of a ResNet classifier, or of any net of a
DDNN, as a physically narrow network (Knowledge Evolution's "slim" network).
"""
import copy
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmpretrain.models import (GlobalAveragePooling, ImageClassifier,
                               LinearClsHead, ResNet, ResNet_CIFAR)
from mmpretrain.models.backbones.resnet import Bottleneck

from mmekd.registry import MODELS
from mmekd.vocabulary import is_ddnn
from ..backbones import (DepthDynamicResNet, DepthDynamicResNetCIFAR,
                         dynamic_only_args)
from ..plain_net import (ExportError, build_plain, check_net, plain_model_cfg,
                         plain_net)
from .split import KESplit, keep_count


def _check_resnet_classifier(model: nn.Module, backbone_types: tuple,
                             what: str) -> None:
    parts = [('model', model, (ImageClassifier, )),
             ('backbone', getattr(model, 'backbone', None), backbone_types),
             ('head', getattr(model, 'head', None), (LinearClsHead, ))]
    if getattr(model, 'neck', None) is not None:
        parts.append(('neck', model.neck, (GlobalAveragePooling, )))
    for part, module, types in parts:
        if type(module) not in types:
            raise TypeError(
                f'Slim extraction supports {what}; the {part} is '
                f'{type(module).__name__}, whose slim form is unknown')
    if model.backbone.deep_stem or model.backbone.avg_down:
        raise TypeError('Slim extraction does not support ResNet with '
                        'deep_stem or avg_down')


def check_slim_support(model: nn.Module, net: Optional[str] = None) -> None:
    """Raise :class:`TypeError` unless slim extraction knows ``model``.

    Known: an :class:`ImageClassifier` with a plain ``ResNet`` or
    ``ResNet_CIFAR`` backbone (no deep stem, no ``avg_down``), an optional
    ``GlobalAveragePooling`` neck and a ``LinearClsHead``; or a
    :class:`mmekd.DDNNClassifier` with an ``mmekd.DepthDynamicResNet(CIFAR)``
    backbone, a ``GlobalAveragePooling`` neck (or none) and an
    ``mmekd.MultiNetClsHead``, together with the ``net`` to extract.
    """
    if not is_ddnn(model):
        if net is not None:
            raise TypeError(f'net={net!r} is for a DDNN model; '
                            f'{type(model).__name__} has one net')
        _check_resnet_classifier(
            model, (ResNet, ResNet_CIFAR),
            'ImageClassifier + ResNet/ResNet_CIFAR + GlobalAveragePooling + '
            'LinearClsHead, and DDNNClassifier')
        return
    if net is None:
        raise TypeError(
            'a DDNN model has one slim network per net: pass net, one of '
            f'{list(model.backbone.net_names)}')
    try:
        check_net(model, net)
        # Raises for a model that has no single-net (exported) form.
        plain_model_cfg(model, net, dict(backbone={}, head={}))
    except ExportError as e:
        raise TypeError(f'Slim extraction of a DDNN net: {e}') from e
    if getattr(model, 'neck', None) is not None and type(
            model.neck) is not GlobalAveragePooling:
        raise TypeError('Slim extraction supports a GlobalAveragePooling '
                        f'neck; the neck is {type(model.neck).__name__}')
    if model.backbone.deep_stem or model.backbone.avg_down:
        raise TypeError('Slim extraction does not support ResNet with '
                        'deep_stem or avg_down')


def _stock_resnet_widths(block: type, stem: int, mids: list,
                         outs: list) -> Optional[int]:
    """``base_channels`` of a stock MMPretrain ResNet with these widths
    (stage ``i``: middle ``base*2**i``, output ``base*2**i*expansion``), or
    None when the widths are not of that form."""
    expansion = 4 if issubclass(block, Bottleneck) else 1
    base = mids[0]
    for i, (mid, out) in enumerate(zip(mids, outs)):
        if mid != base * 2**i or out != mid * expansion:
            return None
    return base


def slim_model_cfg(model: nn.Module, model_cfg: dict, rate: float) -> dict:
    """The config of the slim network of ``model`` at split rate ``rate``.

    Widths are read from the dense modules: stem ``ceil(s*C_stem)``, stage
    ``i`` middle width ``ceil(s*mid_i)`` and output width ``ceil(s*out_i)``;
    the head keeps all classes and gets ``ceil(s*D)`` input features. When
    these widths are those of a stock ResNet (``base * 2**i``, e.g. any
    split of a ResNet whose widths are even multiples, at ``s=0.5``) and the
    blocks per stage are standard, the slim backbone is MMPretrain's own
    ``ResNet`` / ``ResNet_CIFAR`` (``stem_channels``, ``base_channels``);
    otherwise an ``mmekd.SlimResNet`` / ``mmekd.SlimResNetCIFAR`` with
    explicit widths.

    Args:
        model (nn.Module): The dense single-net classifier (a ResNet or a
            single-net ``DepthDynamicResNet``, as exported from a DDNN).
        model_cfg (dict): Its config (the ``model`` field of a config).
        rate (float): Split rate ``s``.

    Returns:
        dict: The slim model's config.
    """
    # DepthDynamicResNet(CIFAR): a DDNN net with non-standard blocks per
    # stage exports to it in single-net mode.
    _check_resnet_classifier(
        model, (ResNet, ResNet_CIFAR, DepthDynamicResNet,
                DepthDynamicResNetCIFAR),
        'ImageClassifier + ResNet/ResNet_CIFAR + GlobalAveragePooling + '
        'LinearClsHead')
    cfg = copy.deepcopy(dict(model_cfg))
    backbone = model.backbone
    stages = [getattr(backbone, n)[0] for n in backbone.res_layers]
    bb_cfg = dict(cfg['backbone'])
    for key in ('type', 'base_channels', 'expansion', 'init_cfg',
                'stem_channels', 'deep_stem', 'avg_down',
                *dynamic_only_args()):
        bb_cfg.pop(key, None)
    cifar = isinstance(backbone, ResNet_CIFAR)
    stem = keep_count(rate, backbone.stem_channels)
    mids = [keep_count(rate, b.mid_channels) for b in stages]
    outs = [keep_count(rate, b.out_channels) for b in stages]
    blocks = list(backbone.stage_blocks)
    base = _stock_resnet_widths(backbone.block, stem, mids, outs)
    standard = tuple(
        ResNet.arch_settings[backbone.depth][1][:len(blocks)]) == tuple(
            blocks)
    if base is not None and standard:
        bb_cfg.update(
            type='ResNet_CIFAR' if cifar else 'ResNet',
            depth=backbone.depth, stem_channels=stem, base_channels=base)
    else:
        bb_cfg.update(
            type='mmekd.SlimResNetCIFAR' if cifar else 'mmekd.SlimResNet',
            depth=backbone.depth, stem_channels=stem, mid_channels=mids,
            out_channels=outs)
        if not standard:
            bb_cfg['stage_blocks'] = blocks
    cfg['backbone'] = bb_cfg
    head_cfg = dict(cfg['head'])
    head_cfg.pop('init_cfg', None)
    head_cfg['in_channels'] = keep_count(rate, model.head.in_channels)
    cfg['head'] = head_cfg
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    return cfg


@torch.no_grad()
def extract_slim(model: nn.Module,
                 model_cfg: dict,
                 rate: float,
                 net: Optional[str] = None) -> Tuple[dict, nn.Module]:
    """Build the slim network of ``model`` (of its net ``net`` for a DDNN)
    and copy its fit hypothesis.

    Every tensor of the slim state dict is the prefix slice of the dense one
    (conv ``weight[:k_out, :k_in]``, BN ``[:k]`` incl. running statistics,
    fc ``weight[:, :k_in]`` and the full fc bias). If the dense network's
    reset-hypothesis weights are zero, both networks compute the same logits.
    A DDNN net is first exported as a plain single-net classifier
    (:func:`mmekd.models.plain_net.plain_net`: its blocks renumbered, its own
    BatchNorm statistics and classifier), whose slim network is returned.

    Args:
        model (nn.Module): The dense classifier (unwrapped).
        model_cfg (dict): Its config.
        rate (float): The KELS split rate ``s``.
        net (str, optional): For a DDNN, the net (``'full'``, ``'sub0'``...).

    Returns:
        tuple[dict, nn.Module]: The slim model's config and the slim model
        (on ``model``'s device, in ``model``'s train/eval mode).
    """
    check_slim_support(model, net)
    if is_ddnn(model):
        plain_cfg, state_dict = plain_net(model, net, model_cfg)
        plain = build_plain(plain_cfg)
        plain.load_state_dict(state_dict)
        plain.data_preprocessor = copy.deepcopy(model.data_preprocessor)
        plain.to(next(model.parameters()).device).train(model.training)
        model, model_cfg = plain, plain_cfg
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

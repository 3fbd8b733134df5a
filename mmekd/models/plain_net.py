# Copyright (c) mmekd contributors. All rights reserved.
"""One net of a DDNN as a plain, single-net classifier: its config and its
weights.

The backbone says what its nets are as stock models
(``plain_backbone_cfg``: MMPretrain's own class and arch where one exists,
e.g. ``ResNet(depth=18)``, ``ConvNeXt(arch='tiny')``; an arch dict or a
single-net depth-dynamic backbone otherwise) and where a block's weights are
(``plain_key``: blocks renumbered ``0..k-1``); the net's private BatchNorm /
classifier copies are taken. Files, configs on disk and checkpoints are
:mod:`mmekd.apis.export`'s.

Example::

    >>> cfg, state_dict = plain_net(ddnn, 'sub0', config.model)
    >>> plain = build_plain(cfg)
    >>> plain.load_state_dict(state_dict)  # same logits as ddnn's sub0
"""
import copy
import inspect
from collections import OrderedDict
from typing import Dict, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS

from mmekd.utils.refusal import RefusalError
from mmekd.vocabulary import (FULL_NET, UnknownNetError, check_net_name,
                              unwrap_model)
from .backbones.depth_dynamic import DepthDynamicMixin
from .backbones.per_net_norm import PER_NET_NORMS

# Arguments of our head that a plain single-net head lacks.
_MULTI_NET_HEAD_KEYS = ('type', 'net_names', 'private_fc', 'init_cfg')
# Arguments of DDNNClassifier carried over to the plain ImageClassifier:
# those it takes (asked from its signature, so a new DDNN-only field such as
# a loss lever is dropped) except the parts rebuilt here.
_CARRIED_KEYS = tuple(
    k for k in inspect.signature(ImageClassifier.__init__).parameters
    if k not in ('self', 'backbone', 'neck', 'head', 'init_cfg'))


class ExportError(RefusalError, ValueError):
    """The requested net cannot be exported from this model / checkpoint."""


def check_exportable(model: nn.Module) -> nn.Module:
    """The unwrapped ``model`` if it is a DDNN classifier whose nets have a
    plain form, else raise :class:`ExportError`."""
    model = unwrap_model(model)
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, DepthDynamicMixin) or not hasattr(
            model, 'forward_nets'):
        raise ExportError(
            'export needs an mmekd.DDNNClassifier with a depth-dynamic '
            'backbone (mmekd.DepthDynamicResNet, ConvNeXt, SwinTransformer, '
            f'VisionTransformer), got {type(model).__name__} with '
            f'{type(backbone).__name__ if backbone is not None else "none"}')
    if not hasattr(model.head, 'classifier'):
        raise ExportError('export needs an mmekd.MultiNetClsHead head, got '
                          f'{type(model.head).__name__}')
    return model


def check_net(model: nn.Module, net: str) -> str:
    """Return ``net`` if ``model`` has it, else raise :class:`ExportError`
    naming the nets it has."""
    try:
        return check_net_name(net, unwrap_model(model).backbone.net_names)
    except UnknownNetError as e:
        raise ExportError(str(e)) from None


def net_arch_name(model: nn.Module, net: str) -> str:
    """Short name of a net's architecture, e.g. ``'resnet18'``,
    ``'convnext-tiny'``."""
    return unwrap_model(model).backbone.net_arch_name(net)


def model_cfg_dict(model_cfg) -> dict:
    """``model_cfg`` (a model config, or a whole :class:`Config` whose
    top-level ``data_preprocessor`` the model takes when it has none, as
    the Runner does) as a plain dict copy."""
    if isinstance(model_cfg, Config):
        cfg = model_cfg
        model_cfg = copy.deepcopy(cfg.model)
        if model_cfg.get('data_preprocessor') is None and cfg.get(
                'data_preprocessor') is not None:
            model_cfg['data_preprocessor'] = cfg.data_preprocessor
    if isinstance(model_cfg, ConfigDict):
        model_cfg = model_cfg.to_dict()
    return copy.deepcopy(dict(model_cfg))


def plain_model_cfg(model: nn.Module, net: str, model_cfg) -> dict:
    """The config of a single-net classifier equivalent to ``net``.

    Args:
        model (nn.Module): The DDNN classifier (built from ``model_cfg``).
        net (str): ``'full'``, ``'sub0'``, ...
        model_cfg (dict | Config): The ``model`` field of its config, or the
            whole config (then a top-level ``data_preprocessor`` is included).

    Returns:
        dict: An ``ImageClassifier`` config with the backbone's
        ``plain_backbone_cfg`` and a ``LinearClsHead``.
    """
    model = check_exportable(model)
    check_net(model, net)
    src = model_cfg_dict(model_cfg)
    bb_cfg = model.backbone.plain_backbone_cfg(net, dict(src['backbone']))

    head_cfg = {
        k: v
        for k, v in src['head'].items() if k not in _MULTI_NET_HEAD_KEYS
    }
    head_cfg = dict(type='LinearClsHead', **head_cfg)

    cfg = dict(type='ImageClassifier', backbone=bb_cfg)
    if src.get('neck') is not None:
        cfg['neck'] = src['neck']
    cfg['head'] = head_cfg
    for key, value in src.items():
        if key in _CARRIED_KEYS:
            cfg[key] = value  # data_preprocessor, train_cfg
    return cfg


def _source_key(model: nn.Module, net: str, key: str) -> str:
    """Key in the DDNN state dict of the plain model's tensor ``key``."""
    if key.startswith('backbone.'):
        key = 'backbone.' + model.backbone.plain_key(net, key[9:])
    if net == FULL_NET:
        return key
    module_name, _, tensor_name = key.rpartition('.')
    module = model.get_submodule(module_name)
    if isinstance(module, PER_NET_NORMS):
        return f'{module_name}.{module.state_key(net, tensor_name)}'
    if module is model.head.fc:
        return f'head.{model.head.state_key(net, tensor_name)}'
    return key


def build_plain(cfg: dict) -> nn.Module:
    """Build a plain model config (MMPretrain's scope; weights are not
    initialised: they are loaded)."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(copy.deepcopy(cfg))


def plain_net(model: nn.Module, net: str,
              model_cfg) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """``net`` of a DDNN classifier as a plain single-net model.

    Args:
        model (nn.Module): A :class:`mmekd.DDNNClassifier` (weights loaded).
        net (str): The net, ``'full'``, ``'sub0'``, ...
        model_cfg (dict | Config): The ``model`` field of the config the
            classifier was built from, or the whole config.

    Returns:
        tuple[dict, OrderedDict]: The plain model's config
        (:func:`plain_model_cfg`) and its state dict (tensors detached and
        copied, on ``model``'s device). Loaded into ``build_plain(cfg)`` it
        gives the logits of ``model.forward_nets(x, [net])``.
    """
    model = check_exportable(model)
    cfg = plain_model_cfg(model, net, model_cfg)
    target = build_plain(cfg)
    source = model.state_dict()
    state_dict = OrderedDict()
    missing = []
    for key, value in target.state_dict().items():
        src_key = _source_key(model, net, key)
        if src_key not in source:
            missing.append(f'{key} <- {src_key}')
            continue
        if source[src_key].shape != value.shape:
            raise ExportError(
                f'shape of {src_key} {tuple(source[src_key].shape)} does not '
                f'match {key} {tuple(value.shape)} of the plain model')
        state_dict[key] = source[src_key].detach().clone()
    if missing:
        raise ExportError(
            f'cannot export net {net!r}: the model lacks {len(missing)} '
            'tensors of the plain model: ' + ', '.join(missing[:20]))
    return cfg, state_dict

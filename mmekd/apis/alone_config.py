# Copyright (c) mmekd contributors. All rights reserved.
"""Each net of a DDNN config trained alone, with the same recipe.

The model becomes the net as a plain classifier (:func:`plain_model_cfg`:
MMPretrain's ``ResNet``/``ResNet_CIFAR`` for a standard depth, else an
``mmekd.DepthDynamicResNet(CIFAR)`` with that net's ``stage_blocks``); the
per-net metric becomes MMPretrain's ``Accuracy`` with the same top-k, and a
DDNN-only model wrapper the stock one it extends. Everything else (data,
augmentation, schedule, optimizer, hooks, seed) is the DDNN config's.
"""
from collections import OrderedDict
from typing import Dict, Optional

import torch.nn as nn
from mmengine.config import Config
from mmpretrain.registry import MODEL_WRAPPERS

from .export import build_model, load_config, plain_model_cfg
from .stock_config import single_net_evaluator, stock_component


def alone_config(config, net: str,
                 model: Optional[nn.Module] = None) -> Config:
    """The config that trains ``net`` of a DDNN config alone.

    Args:
        config (str | Config): The DDNN config (with any overrides merged).
        net (str): ``'full'``, ``'sub0'``, ...
        model (nn.Module, optional): Its model, if built already.

    Returns:
        Config: The same recipe with the plain single-net model; its
        ``filename`` is the DDNN config's.

    Example::

        cfg = alone_config('configs/ddnn_r34_cifar100.py', 'sub0')
        cfg.model.backbone  # ResNet_CIFAR, depth 18
    """
    cfg = load_config(config)
    model = model if model is not None else build_model(cfg)
    d = cfg.to_dict()
    d['model'] = plain_model_cfg(model, net, cfg.model)
    for key in ('val_evaluator', 'test_evaluator'):
        if d.get(key) is not None:
            d[key] = single_net_evaluator(d[key])
    wrapper = d.get('model_wrapper_cfg')
    if isinstance(wrapper, dict):
        notes = []  # (the alone config keeps no notes)
        stock = stock_component(wrapper, MODEL_WRAPPERS, 'model_wrapper_cfg',
                                notes)
        if stock is None:
            d.pop('model_wrapper_cfg')
        else:
            d['model_wrapper_cfg'] = stock
    return Config(d, filename=cfg.filename)


def alone_configs(config) -> Dict[str, Config]:
    """:func:`alone_config` of every net of a DDNN config, in the order of
    its nets (``full`` first)."""
    cfg = load_config(config)
    model = build_model(cfg)
    return OrderedDict((net, alone_config(cfg, net, model))
                       for net in model.backbone.net_names)

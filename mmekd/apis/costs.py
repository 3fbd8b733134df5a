# Copyright (c) mmekd contributors. All rights reserved.
"""Parameters and FLOPs of every net of a DDNN model, counted on the exported
single-net models (what is deployed)."""
from typing import Dict, List, Optional, Tuple

import torch.nn as nn
from mmengine.config import Config

from mmekd.models.plain_net import build_plain, net_arch_name, plain_net
from mmekd.utils.flops import complexity
from .export import build_model, load_config


def input_size(cfg: Config) -> Tuple[int, int]:
    """``(H, W)`` of the images the config's test pipeline produces: the
    last ``CenterCrop`` / ``Resize`` / ``RandomCrop`` / ``RandomResizedCrop``
    size, else 32 for a CIFAR backbone and 224 otherwise."""
    pipeline = []
    loader = cfg.get('test_dataloader') or {}
    if isinstance(loader.get('dataset'), dict):
        pipeline = loader['dataset'].get('pipeline') or []
    pipeline = pipeline or cfg.get('test_pipeline') or []
    for t in reversed(list(pipeline)):
        size = None
        if t.get('type') in ('CenterCrop', 'RandomCrop'):
            size = t.get('crop_size')
        elif t.get('type') in ('Resize', 'RandomResizedCrop'):
            size = t.get('scale')
        if size is None:
            continue
        if isinstance(size, int):
            return size, size
        w, h = size  # mmcv sizes are (w, h)
        return int(h), int(w)
    backbone = str(cfg.model.get('backbone', {}).get('type', ''))
    return (32, 32) if 'CIFAR' in backbone else (224, 224)


def net_costs(config,
              model: Optional[nn.Module] = None,
              shape: Optional[Tuple[int, int]] = None) -> List[Dict]:
    """One row per net of a DDNN config: ``net``, ``arch``, ``blocks``
    (per stage), ``plain_type`` (the exported backbone type), ``flops``,
    ``params`` and ``input_size``.

    Args:
        config (str | Config): The DDNN config.
        model (nn.Module, optional): Its model (weights do not matter);
            built from the config if not given.
        shape (tuple[int, int], optional): ``(H, W)``; default from
            :func:`input_size`.
    """
    cfg = load_config(config)
    model = model if model is not None else build_model(cfg)
    hw = tuple(shape) if shape else input_size(cfg)
    rows = []
    for net in model.backbone.net_names:
        plain_cfg, _ = plain_net(model, net, cfg)
        plain = build_plain(plain_cfg)
        blocks = model.backbone.blocks_per_stage(net)
        rows.append(
            dict(
                net=net,
                arch=net_arch_name(model, net),
                blocks=blocks,
                # exported to a stock MMPretrain class (no mmekd needed)
                standard=not plain_cfg['backbone']['type'].startswith(
                    'mmekd.'),
                plain_type=plain_cfg['backbone']['type'],
                input_size=hw,
                **complexity(plain, (3, *hw))))
    return rows

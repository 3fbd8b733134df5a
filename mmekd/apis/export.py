# Copyright (c) mmekd contributors. All rights reserved.
"""Export one net of a DDNN model as a plain, single-net classifier.

A net whose blocks per stage are those of a standard ResNet becomes
MMPretrain's own ``ResNet`` / ``ResNet_CIFAR`` (loadable without mmekd);
any other net becomes an :class:`mmekd.DepthDynamicResNet` in single-net mode
(``stage_blocks=...``, no sub-nets). Block indices are renumbered to
``0..k-1`` and private BatchNorm / classifier copies of the net are taken.
"""
import copy
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.model import is_model_wrapper
from mmpretrain.models import ResNet

from mmekd.apis.channel_order import (describe_channel_order,
                                      model_channel_order,
                                      set_file_channel_order,
                                      to_file_channel_order)
from mmekd.models.backbones import (DepthDynamicResNet,
                                    DepthDynamicResNetCIFAR,
                                    PrivateBatchNorm2d,
                                    PrivateStatsBatchNorm2d)
from mmekd.models.utils import FULL_NET
from mmekd.utils.checkpoint_keys import split_private_stats, warn_shared_stats

# Arguments of our backbone / head that a plain single-net model lacks.
_DYNAMIC_BACKBONE_KEYS = ('type', 'sub_depths', 'block_choice',
                          'private_norm', 'stage_blocks', 'init_cfg')
_MULTI_NET_HEAD_KEYS = ('type', 'net_names', 'private_fc', 'init_cfg')
# Arguments of DDNNClassifier that ImageClassifier does not take.
_DDNN_KEYS = ('type', 'kl_loss', 'at_loss', 'at_stages', 'predict_net',
              'eval_all_nets', 'init_cfg', 'backbone', 'neck', 'head')
_LAYER_KEY = re.compile(r'^backbone\.(layer\d+)\.(\d+)\.(.+)$')


class ExportError(ValueError):
    """The requested net cannot be exported from this model / checkpoint."""


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


def _check_exportable(model: nn.Module) -> None:
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, DepthDynamicResNet) or not hasattr(
            model, 'forward_nets'):
        raise ExportError(
            'export needs an mmekd.DDNNClassifier with an '
            'mmekd.DepthDynamicResNet(CIFAR) backbone, got '
            f'{type(model).__name__} with '
            f'{type(backbone).__name__ if backbone is not None else "none"}')
    if not hasattr(model.head, 'classifier'):
        raise ExportError('export needs an mmekd.MultiNetClsHead head, got '
                          f'{type(model.head).__name__}')


def check_net(model: nn.Module, net: str) -> str:
    """Return ``net`` if ``model`` has it, else raise :class:`ExportError`
    naming the nets it has."""
    names = list(_unwrap(model).backbone.net_names)
    if net not in names:
        raise ExportError(f'unknown net {net!r}; this model has {names}')
    return net


def standard_depth(block: type, blocks_per_stage: Sequence[int]
                   ) -> Optional[int]:
    """The MMPretrain ResNet depth with this block type and these blocks per
    stage (e.g. BasicBlock, ``[2, 2, 2, 2]`` -> 18), or None."""
    for depth, (arch_block, arch_blocks) in ResNet.arch_settings.items():
        if arch_block is block and tuple(arch_blocks) == tuple(
                blocks_per_stage):
            return depth
    return None


def net_depth(block: type, blocks_per_stage: Sequence[int]) -> int:
    """Layer count of a ResNet (convolutions on the main path + stem + fc):
    ``2`` per BasicBlock, ``3`` per Bottleneck, plus 2."""
    from mmpretrain.models.backbones.resnet import Bottleneck
    per_block = 3 if issubclass(block, Bottleneck) else 2
    return per_block * sum(blocks_per_stage) + 2


def net_arch_name(model: nn.Module, net: str) -> str:
    """Short name of a net's architecture, e.g. ``'resnet18'`` (or
    ``'resnet10'`` for BasicBlock ``[1, 1, 1, 1]``)."""
    backbone = _unwrap(model).backbone
    return 'resnet%d' % net_depth(backbone.block,
                                  backbone.blocks_per_stage(net))


def _model_cfg_dict(model_cfg) -> dict:
    if isinstance(model_cfg, Config):
        # A whole config: its top-level data_preprocessor is the model's
        # unless the model has its own (as Runner and get_model do).
        cfg = model_cfg
        model_cfg = copy.deepcopy(cfg.model)
        if model_cfg.get('data_preprocessor') is None and cfg.get(
                'data_preprocessor') is not None:
            model_cfg['data_preprocessor'] = cfg.data_preprocessor
    if isinstance(model_cfg, ConfigDict):
        model_cfg = model_cfg.to_dict()
    return copy.deepcopy(dict(model_cfg))


def plain_model_cfg(model: nn.Module, net: str, model_cfg: dict) -> dict:
    """The config of a single-net classifier equivalent to ``net``.

    Args:
        model (nn.Module): The DDNN classifier (built from ``model_cfg``).
        net (str): ``'full'``, ``'sub0'``, ...
        model_cfg (dict | Config): The ``model`` field of its config, or the
            whole config (then a top-level ``data_preprocessor`` is included).

    Returns:
        dict: An ``ImageClassifier`` config with a ``ResNet`` /
        ``ResNet_CIFAR`` backbone when the net is a standard depth, else an
        ``mmekd.DepthDynamicResNet(CIFAR)`` single-net backbone.
    """
    model = _unwrap(model)
    _check_exportable(model)
    check_net(model, net)
    src = _model_cfg_dict(model_cfg)
    backbone = model.backbone
    blocks = backbone.blocks_per_stage(net)
    cifar = isinstance(backbone, DepthDynamicResNetCIFAR)

    bb_cfg = {
        k: v
        for k, v in src['backbone'].items() if k not in _DYNAMIC_BACKBONE_KEYS
    }
    bb_cfg.pop('depth', None)
    depth = standard_depth(backbone.block, blocks)
    if depth is not None:
        bb_cfg = dict(
            type='ResNet_CIFAR' if cifar else 'ResNet', depth=depth, **bb_cfg)
    else:
        bb_cfg = dict(
            type=('mmekd.DepthDynamicResNetCIFAR'
                  if cifar else 'mmekd.DepthDynamicResNet'),
            depth=backbone.depth,
            stage_blocks=list(blocks),
            **bb_cfg)
    # The classifier reads the last stage only; the other outputs fed
    # attention distillation during training.
    bb_cfg['out_indices'] = (backbone.num_stages - 1, )

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
        if key not in _DDNN_KEYS:
            cfg[key] = value  # data_preprocessor, train_cfg
    return cfg


def _source_key(model: nn.Module, net: str, key: str) -> str:
    """Key in the DDNN state dict of the plain model's parameter ``key``."""
    blocks = model.backbone.net_blocks[net]
    m = _LAYER_KEY.match(key)
    if m:
        stage = model.backbone.res_layers.index(m.group(1))
        idx = int(m.group(2))
        key = (f'backbone.{m.group(1)}.{blocks[stage][idx]}.'
               f'{m.group(3)}')
    module_name, _, tensor_name = key.rpartition('.')
    if net == FULL_NET:
        return key
    module = model.get_submodule(module_name)
    if isinstance(module, PrivateBatchNorm2d):
        return f'{module_name}.sub_norms.{net}.{tensor_name}'
    if (isinstance(module, PrivateStatsBatchNorm2d)
            and module.stats_of[net] is not None
            and tensor_name not in ('weight', 'bias')):
        return (f'{module_name}.sub_stats.{module.stats_of[net]}.'
                f'{tensor_name}')
    if module is model.head.fc and model.head.private_fc:
        return f'head.sub_fcs.{net}.{tensor_name}'
    return key


def export_subnet(model: nn.Module, net: str,
                  model_cfg: dict) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """Export ``net`` of a DDNN classifier as a plain single-net model.

    Args:
        model (nn.Module): A :class:`mmekd.DDNNClassifier` (weights loaded).
        net (str): The net to export, ``'full'``, ``'sub0'``, ...
        model_cfg (dict | Config): The ``model`` field of the config the
            classifier was built from, or the whole config (then a top-level
            ``data_preprocessor`` is included).

    Returns:
        tuple[dict, OrderedDict]: The plain model's config (see
        :func:`plain_model_cfg`) and its state dict (tensors detached, on
        the same device as ``model``). Loading the state dict into
        ``MODELS.build(cfg)`` gives the same logits as
        ``model.forward_nets(x, [net])``. Given the whole config, its
        ``to_rgb`` makes image files (read as BGR) reach the model in its
        training channel order (:mod:`mmekd.apis.channel_order`).
    """
    model = _unwrap(model)
    cfg = plain_model_cfg(model, net, model_cfg)
    set_file_channel_order(cfg, model_cfg)
    from mmpretrain.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        # Weights are overwritten below; init is not run.
        target = MODELS.build(copy.deepcopy(cfg))
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


def check_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                     what: str = 'checkpoint') -> None:
    """Raise :class:`ExportError` listing missing, unexpected and mismatched
    keys unless ``state_dict`` fits ``model`` exactly.

    A DDNN model's :meth:`load_state_dict` fills private BatchNorm and
    classifier copies a checkpoint lacks from the full net's values (so plain
    ResNet weights load); the nets such a checkpoint does not contain are
    reported here as missing, so that exporting them cannot silently give the
    full net's values. Missing per-net BatchNorm statistics
    (``private_norm='stats'``, a checkpoint trained with shared statistics)
    are logged: the nets keep the shared ones they were tested with.
    """
    model = _unwrap(model)
    expected = model.state_dict()
    missing, shared_stats = split_private_stats(
        [k for k in expected if k not in state_dict])
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model '
        f'{tuple(v.shape)}' for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        warn_shared_stats(shared_stats, what)
        return

    def _fmt(title: str, keys: List[str]) -> str:
        shown = ', '.join(keys[:12])
        more = f' (+{len(keys) - 12} more)' if len(keys) > 12 else ''
        return f'\n  {title} ({len(keys)}): {shown}{more}'

    msg = f'the {what} does not match the model of this config:'
    if missing:
        msg += _fmt('missing keys', missing)
    if unexpected:
        msg += _fmt('unexpected keys', unexpected)
    if mismatched:
        msg += _fmt('shape mismatches', mismatched)
    private = re.compile(r'\.(?:sub_norms|sub_fcs)\.([^.]+)\.')
    nets = sorted({m.group(1) for k in missing for m in [private.search(k)]
                   if m})
    if nets and not unexpected and not mismatched:
        msg += (f'\n  The checkpoint has no private BatchNorm/classifier '
                f'copies for nets {nets}: it was not trained with them.')
    raise ExportError(msg)


# ---------------------------------------------------------------------- #
# configs and checkpoints
# ---------------------------------------------------------------------- #
def load_config(config) -> Config:
    """A :class:`Config` from a path or a Config (copied)."""
    if isinstance(config, Config):
        return copy.deepcopy(config)
    return Config.fromfile(str(config))


def build_model(config) -> nn.Module:
    """Build ``config.model`` (data preprocessor from the config's top level
    if the model has none), in eval mode, on CPU, without loading weights."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = load_config(config)
    model_cfg = cfg.model
    if model_cfg.get('data_preprocessor') is None and cfg.get(
            'data_preprocessor') is not None:
        model_cfg.data_preprocessor = cfg.data_preprocessor
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmpretrain')):
        model = MODELS.build(model_cfg)
    return model.eval()


def read_checkpoint(checkpoint: str) -> Tuple[dict, dict]:
    """Load a checkpoint safely (``weights_only=True`` + allow-list).

    Returns:
        tuple[dict, dict]: Its state dict (``module.`` prefixes removed) and
        its ``meta`` (empty if none).
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    import mmekd  # noqa: F401  (safe loader for local files)
    ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    if not isinstance(ckpt, dict):
        raise ExportError(f'{checkpoint} is not a checkpoint dict')
    state_dict = ckpt.get('state_dict', ckpt)
    state_dict = OrderedDict(
        (re.sub(r'^module\.', '', k), v) for k, v in state_dict.items()
        if isinstance(v, torch.Tensor))
    meta = ckpt.get('meta', {}) if 'state_dict' in ckpt else {}
    return state_dict, dict(meta or {})


def trained_nets(meta: dict) -> Optional[Dict[str, tuple]]:
    """``{net: block indices per stage}`` of the model a checkpoint was
    trained as (read from the config MMEngine stores in ``meta['cfg']``), or
    None when the checkpoint does not say."""
    text = meta.get('cfg')
    if not isinstance(text, str):
        return None
    try:
        cfg = Config.fromstring(text, '.py')
        backbone_cfg = cfg.model.backbone
    except Exception:  # an unreadable / foreign config: cannot tell
        return None
    backbone_cfg = copy.deepcopy(backbone_cfg)
    backbone_cfg.pop('init_cfg', None)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    try:
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            backbone = MODELS.build(backbone_cfg)
    except Exception:
        return None
    if hasattr(backbone, 'net_blocks'):
        return dict(backbone.net_blocks)
    if hasattr(backbone, 'stage_blocks'):  # a plain ResNet: one net
        full = tuple(tuple(range(n)) for n in backbone.stage_blocks)
        return {FULL_NET: full}
    return None


def load_ddnn_model(config, checkpoint: Optional[str] = None) -> nn.Module:
    """Build the DDNN classifier of ``config`` and load ``checkpoint``,
    failing with the list of missing / unexpected / mismatched keys if the
    checkpoint belongs to another model.

    The checkpoint's meta (``meta``) and its trained nets are kept on the
    model as ``model.checkpoint_meta``.
    """
    cfg = load_config(config)
    model = build_model(cfg)
    _check_exportable(model)
    model.checkpoint_meta = {}
    if checkpoint is not None:
        state_dict, meta = read_checkpoint(checkpoint)
        check_state_dict(model, state_dict, f'checkpoint {checkpoint}')
        model.load_state_dict(state_dict, strict=True)
        model.checkpoint_meta = meta
    return model


def check_net_in_checkpoint(model: nn.Module, net: str) -> None:
    """Raise :class:`ExportError` if the checkpoint loaded by
    :func:`load_ddnn_model` was trained without ``net`` (same blocks)."""
    check_net(model, net)
    nets = trained_nets(getattr(model, 'checkpoint_meta', {}))
    if nets is None:
        return
    blocks = _unwrap(model).backbone.net_blocks[net]
    if blocks not in nets.values():
        trained = {n: [len(s) for s in b] for n, b in nets.items()}
        raise ExportError(
            f'the checkpoint does not contain net {net!r} (blocks '
            f'{[list(s) for s in blocks]}): it was trained with nets '
            f'{trained}; its weights for these blocks were never trained as '
            'this net')


def exported_config(config, plain_cfg: dict,
                    header: str = '') -> Tuple[Config, str]:
    """The standalone config of an exported net: ``config`` with the plain
    model, single-net evaluators and no mmekd training machinery.

    Returns:
        tuple[Config, str]: The config and its text (``header`` as comments,
        then the config), ready to be written to a ``.py`` file.
    """
    src = load_config(config)
    d = src.to_dict()
    notes = []
    d['model'] = copy.deepcopy(plain_cfg)
    d['default_scope'] = 'mmpretrain'
    for key in ('val_evaluator', 'test_evaluator'):
        if key in d:
            d[key] = _single_net_evaluator(d[key])
    hooks = d.get('custom_hooks') or []
    kept = [
        h for h in hooks if not str(h.get('type', '')).startswith('mmekd.')
    ]
    if len(kept) != len(hooks):
        notes.append('dropped DDNN training hooks: ' + ', '.join(
            h['type'] for h in hooks if h not in kept))
        d['custom_hooks'] = kept
    for key in ('load_from', 'resume', 'work_dir'):
        d.pop(key, None)
    d['load_from'] = None
    needs_mmekd = 'mmekd.' in repr(d['model']) or any(
        str(m.get('type', '')).startswith('mmekd.')
        for key in ('val_evaluator', 'test_evaluator')
        for m in _as_list(d.get(key)))
    if needs_mmekd:
        d['custom_imports'] = dict(
            imports=['mmekd'], allow_failed_imports=False)
    else:
        d.pop('custom_imports', None)
    datasets = sorted({
        d[k]['dataset']['type']
        for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')
        if isinstance(d.get(k), dict) and isinstance(
            d[k].get('dataset'), dict) and str(d[k]['dataset'].get(
                'type', '')).startswith('mmekd.')
    })
    if datasets:
        notes.append(f'the datasets {datasets} are mmekd classes (pip install '
                     'mmekd to train/test on them); the model itself '
                     f'{"needs" if needs_mmekd else "does not need"} mmekd')
    notes += to_file_channel_order(d, model_channel_order(src))
    cfg = Config(d)
    lines = [f'# {line}' if line else '#' for line in header.splitlines()]
    lines += [f'# Note: {n}' for n in notes]
    text = '\n'.join(lines) + ('\n' if lines else '') + cfg.pretty_text
    return cfg, text


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _single_net_evaluator(evaluator):
    """MultiNetAccuracy -> MMPretrain's Accuracy with the same top-k."""
    def convert(metric):
        if str(metric.get('type', '')) in ('mmekd.MultiNetAccuracy',
                                           'MultiNetAccuracy'):
            new = dict(type='Accuracy', topk=metric.get('topk', (1, )))
            if metric.get('prefix') is not None:
                new['prefix'] = metric['prefix']
            return new
        return metric

    if isinstance(evaluator, (list, tuple)):
        return [convert(m) for m in evaluator]
    return convert(evaluator)


def _plain(obj):
    """Containers of str/int/float/bool/None only (checkpoint meta must load
    with ``torch.load(weights_only=True)`` and no allow-list)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, 'tolist'):  # numpy / torch scalars and arrays
        return _plain(obj.tolist())
    return str(obj)


def exported_checkpoint(state_dict: Dict[str, torch.Tensor],
                        source_meta: Optional[dict] = None,
                        export_info: Optional[dict] = None) -> dict:
    """A published-style checkpoint: ``state_dict`` (CPU tensors) and
    ``meta`` (dataset_meta, versions and ``export_info``); no optimizer,
    message hub or pickled objects."""
    import mmengine
    import mmpretrain

    from mmekd import __version__ as mmekd_version
    source_meta = source_meta or {}
    meta = dict(
        mmengine_version=mmengine.__version__,
        mmpretrain_version=mmpretrain.__version__,
        mmekd_version=mmekd_version)
    for key in ('dataset_meta', 'epoch', 'iter', 'seed', 'experiment_name'):
        if key in source_meta:
            meta[key] = source_meta[key]
    if export_info:
        meta['mmekd_export'] = export_info
    return dict(
        meta=_plain(meta),
        state_dict=OrderedDict(
            (k, v.detach().cpu().contiguous()) for k, v in state_dict.items()))


def export_to_files(config,
                    checkpoint: Optional[str],
                    net: str,
                    out_dir: str,
                    name: Optional[str] = None,
                    recalibrate_bn: int = 0) -> Tuple[str, str]:
    """Export ``net`` of a DDNN config + checkpoint as ``<name>.py`` and
    ``<name>.pth`` in ``out_dir`` (what ``tools/export_subnet.py`` does).

    Args:
        config (str | Config): The DDNN config.
        checkpoint (str, optional): Its checkpoint; None exports the
            initial weights (useful for costs and tests only).
        net (str): The net to export.
        out_dir (str): Output folder (created).
        name (str, optional): File stem. Defaults to
            ``<config stem>_<net>-<arch>``, e.g.
            ``ddnn_r34_cifar100_sub0-resnet18``.
        recalibrate_bn (int): Recompute the net's BatchNorm statistics on
            this many batches of the config's ``train_dataloader`` before
            exporting (0: keep the checkpoint's).

    Returns:
        tuple[str, str]: Paths of the written config and checkpoint.
    """
    import os
    import os.path as osp

    import mmengine
    cfg = load_config(config)
    model = load_ddnn_model(cfg, checkpoint)
    check_net(model, net)
    if checkpoint is not None:
        check_net_in_checkpoint(model, net)
    if recalibrate_bn:
        from mmengine.runner import Runner

        from mmekd.models.utils import recalibrate_bn as _recalibrate
        from mmengine.registry import DefaultScope
        with DefaultScope.overwrite_default_scope(
                cfg.get('default_scope', 'mmpretrain')):
            loader = Runner.build_dataloader(cfg.train_dataloader)
        # Record the batches actually used: a short loader gives fewer.
        recalibrate_bn = _recalibrate(model, loader, recalibrate_bn, net=net)
    plain_cfg, state_dict = export_subnet(model, net, cfg)
    backbone = model.backbone
    arch = net_arch_name(model, net)
    src_name = osp.splitext(osp.basename(cfg.filename or 'config.py'))[0]
    name = name or f'{src_name}_{net}-{arch}'
    info = dict(
        source_config=cfg.filename,
        source_checkpoint=osp.basename(checkpoint) if checkpoint else None,
        net=net,
        blocks_per_stage=backbone.blocks_per_stage(net),
        block_indices=[list(s) for s in backbone.net_blocks[net]],
        bn_recalibration_batches=int(recalibrate_bn),
        # Of the model's input; image files are read as BGR.
        channel_order=model_channel_order(cfg))
    header = (f'{name}: net {net!r} ({arch}, blocks per stage '
              f'{info["blocks_per_stage"]}, block indices '
              f'{info["block_indices"]}) of\n{cfg.filename}, exported by '
              'mmekd (tools/export_subnet.py).\n'
              + (f'BatchNorm statistics recalibrated on {recalibrate_bn} '
                 'training batches.\n' if recalibrate_bn else '')
              + describe_channel_order(info['channel_order']) + '\n')
    _, text = exported_config(cfg, plain_cfg, header)
    ckpt = exported_checkpoint(state_dict, model.checkpoint_meta, info)
    os.makedirs(out_dir, exist_ok=True)
    cfg_path = osp.join(out_dir, f'{name}.py')
    ckpt_path = osp.join(out_dir, f'{name}.pth')
    with open(cfg_path, 'w') as f:
        f.write(text)
    torch.save(ckpt, ckpt_path)
    # What we promise: a plain checkpoint, loadable without any allow-list.
    torch.load(ckpt_path, map_location='cpu', weights_only=True)
    mmengine.Config.fromfile(cfg_path)
    return cfg_path, ckpt_path

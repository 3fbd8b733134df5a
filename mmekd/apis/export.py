# Copyright (c) mmekd contributors. All rights reserved.
"""Export one net of a DDNN model as a plain, single-net classifier.

A net whose blocks per stage are those of a standard ResNet becomes
MMPretrain's own ``ResNet`` / ``ResNet_CIFAR`` (loadable without mmekd);
any other net becomes an :class:`mmekd.DepthDynamicResNet` in single-net mode
(``stage_blocks=...``, no sub-nets). Block indices are renumbered to
``0..k-1`` and private BatchNorm / classifier copies of the net are taken.
"""
import copy
import inspect
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.model import is_model_wrapper
from mmpretrain.models import ImageClassifier, ResNet

from mmekd.apis.channel_order import (describe_channel_order,
                                      model_channel_order,
                                      set_file_channel_order,
                                      to_file_channel_order)
from mmekd.models.backbones import (DepthDynamicResNet,
                                    DepthDynamicResNetCIFAR,
                                    dynamic_only_args)
from mmekd.models.backbones.per_net_norm import (PER_NET_NORMS,
                                                 private_net_of_key)
from mmekd.models.utils import FULL_NET, UnknownNetError, check_net_name
from mmekd.utils.checkpoint_keys import compare_state_dict, warn_shared_stats
from mmekd.utils.finite import check_finite
from mmekd.utils.literal_config import LiteralConfigError, read_literal_config
from mmekd.utils.refusal import RefusalError

from .stock_config import (folder_names, image_folder_datasets, mmekd_types,
                           single_net_evaluator, stock_dataloaders,
                           stock_training_machinery, write_image_folder)

# Arguments of our backbone / head that a plain single-net model lacks.
_DYNAMIC_BACKBONE_KEYS = ('type', 'init_cfg', *dynamic_only_args())
_MULTI_NET_HEAD_KEYS = ('type', 'net_names', 'private_fc', 'init_cfg')
# Arguments of DDNNClassifier carried over to the plain ImageClassifier:
# those it takes (asked from its signature, so a new DDNN-only field such as
# a loss lever is dropped) except the parts rebuilt here.
_CARRIED_KEYS = tuple(
    k for k in inspect.signature(ImageClassifier.__init__).parameters
    if k not in ('self', 'backbone', 'neck', 'head', 'init_cfg'))
_LAYER_KEY = re.compile(r'^backbone\.(layer\d+)\.(\d+)\.(.+)$')


class ExportError(RefusalError, ValueError):
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
    try:
        return check_net_name(net, _unwrap(model).backbone.net_names)
    except UnknownNetError as e:
        raise ExportError(str(e)) from None


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
        if key in _CARRIED_KEYS:
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
    if isinstance(module, PER_NET_NORMS):
        return f'{module_name}.{module.state_key(net, tensor_name)}'
    if module is model.head.fc:
        return f'head.{model.head.state_key(net, tensor_name)}'
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
    # The comparison of every checkpoint check; export is strict about
    # unexpected keys too (a checkpoint of another model).
    missing, shared_stats, unexpected, shapes = compare_state_dict(
        model, state_dict)
    mismatched = [f'{k}: checkpoint {c} vs model {m}' for k, c, m in shapes]
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
    nets = sorted({private_net_of_key(k) for k in missing} - {None})
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


def trained_nets(meta: dict, source: str = 'the checkpoint'
                 ) -> Optional[Dict[str, tuple]]:
    """``{net: block indices per stage}`` of the model a checkpoint was
    trained as (read from the config MMEngine stores in ``meta['cfg']``), or
    None when the checkpoint does not say.

    The stored config text is read as data (:func:`read_literal_config`),
    never executed: a checkpoint is not trusted to run code.

    Raises:
        ExportError: ``meta['cfg']`` is not a config of literal
            assignments.
    """
    text = meta.get('cfg')
    if not isinstance(text, str):
        return None
    try:
        cfg = read_literal_config(text)
    except LiteralConfigError as e:
        raise ExportError(
            f"the config stored in {source} (meta['cfg']) is not plain "
            f'data ({e}); it was not executed. A checkpoint written by '
            'MMEngine stores only literal assignments: this one was altered '
            'or comes from elsewhere. Do not use it, or remove its '
            "meta['cfg'] if you trust its weights.") from None
    backbone_cfg = (cfg.get('model') or {}).get('backbone')
    if not isinstance(backbone_cfg, dict):
        return None
    backbone_cfg = ConfigDict(backbone_cfg)
    backbone_cfg.pop('init_cfg', None)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        cls = MODELS.get(backbone_cfg.get('type')) if isinstance(
            backbone_cfg.get('type'), str) else None
        # Only ResNets are rebuilt from a checkpoint's config: their
        # constructors take numbers and allocate layers, nothing else.
        if not (isinstance(cls, type) and issubclass(cls, ResNet)):
            return None
        try:
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
        check_finite(state_dict, f'Checkpoint {checkpoint}',
                     advice='It was saved after training diverged: export '
                     'or test an earlier checkpoint.')
        # Checked above; what may still be missing (a BatchNorm's update
        # counter) does not change the exported values.
        model.load_state_dict(state_dict, strict=False)
        model.checkpoint_meta = meta
        model.checkpoint_path = checkpoint
    return model


def check_net_in_checkpoint(model: nn.Module, net: str) -> None:
    """Raise :class:`ExportError` if the checkpoint loaded by
    :func:`load_ddnn_model` was trained without ``net`` (same blocks)."""
    check_net(model, net)
    path = getattr(model, 'checkpoint_path', None)
    nets = trained_nets(getattr(model, 'checkpoint_meta', {}),
                        f'checkpoint {path}' if path else 'the checkpoint')
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


def exported_config(config, plain_cfg: dict, header: str = '',
                    folders: Optional[Dict[str, dict]] = None,
                    keep_mmekd_data: bool = False) -> Tuple[Config, str]:
    """The standalone config of an exported net: ``config`` with the plain
    model, single-net evaluators, and stock MMEngine / MMPretrain components
    in place of mmekd's (see :mod:`mmekd.apis.stock_config`).

    Args:
        config (str | Config): The DDNN config.
        plain_cfg (dict): The exported model (:func:`plain_model_cfg`).
        header (str): Comment lines for the top of the file.
        folders (dict, optional): Loader key -> ``CustomDataset`` config of
            the images written for it (:func:`write_image_folder`).
        keep_mmekd_data (bool): Keep datasets that have no stock
            counterpart (the config then imports mmekd for them, with a
            note) instead of refusing them. Defaults to False.

    Returns:
        tuple[Config, str]: The config and its text (``header`` and the
        notes on every replaced component as comments, then the config),
        ready to be written to a ``.py`` file.

    Raises:
        ExportError: A ``mmekd.`` type is left outside a model that needs
            mmekd (e.g. a dataset with no stock counterpart and no folder).
    """
    src = load_config(config)
    d = src.to_dict()
    notes = []
    d['model'] = copy.deepcopy(plain_cfg)
    d['default_scope'] = 'mmpretrain'
    for key in ('val_evaluator', 'test_evaluator'):
        if key in d:
            d[key] = single_net_evaluator(d[key])
    stock_training_machinery(d, notes)
    stock_dataloaders(d, folders or {}, notes)
    for key in ('load_from', 'resume', 'work_dir'):
        d.pop(key, None)
    d['load_from'] = None
    needs_mmekd = bool(mmekd_types(d['model']))
    left = [(f, t) for f, t in mmekd_types(d)
            if not (needs_mmekd and f.startswith('model.'))]
    data = [(f, t) for f, t in left if 'dataloader.' in f]
    if keep_mmekd_data and data and len(data) == len(left):
        notes.append(
            'the datasets ' + ', '.join(sorted({t for _, t in data}))
            + ' are mmekd classes: the model is stock MMPretrain, training or '
            'testing on these datasets needs mmekd (or write them as image '
            'files with tools/export_subnet.py --data-dir)')
        needs_data = True
        left = []
    else:
        needs_data = False
    if left:
        raise ExportError(
            'the exported config would still need mmekd for '
            + ', '.join(f'{f}={t!r}' for f, t in left)
            + ': these have no stock MMPretrain counterpart (write the data '
            'as image files: tools/export_subnet.py --data-dir)')
    if needs_mmekd or needs_data:
        d['custom_imports'] = dict(
            imports=['mmekd'], allow_failed_imports=False)
    if needs_mmekd:
        notes.append('the backbone is not a standard ResNet depth: this '
                     'model needs mmekd (pip install mmekd)')
    else:
        d.pop('custom_imports', None)
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
                    recalibrate_bn: int = 0,
                    data_dir: Optional[str] = None) -> Tuple[str, str]:
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
        data_dir (str, optional): Write the images of every dataloader's
            dataset here and let the exported config read them with
            ``CustomDataset``. Defaults to None: only datasets without a
            stock MMPretrain counterpart (e.g. ``mmekd.Digits``) are
            written, to ``<out_dir>/<name>_data``; ``mmekd.CIFAR10/100``
            become MMPretrain's ``CIFAR10/100``.

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
    to_write = image_folder_datasets(cfg, all_datasets=data_dir is not None)
    root = data_dir or osp.join(out_dir, f'{name}_data')
    names = folder_names(to_write)
    written = {}
    for key, dataset in to_write.items():
        if names[key] not in written:
            written[names[key]] = write_image_folder(dataset, root,
                                                     names[key])
    folders = {key: written[names[key]] for key in to_write}
    _, text = exported_config(cfg, plain_cfg, header, folders)
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

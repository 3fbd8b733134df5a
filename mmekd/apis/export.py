# Copyright (c) mmekd contributors. All rights reserved.
"""Export one net of a DDNN model to files: a standalone config, a
published-style checkpoint and, where needed, its data as image folders.

What the net is as a plain classifier (config and weights) is
:mod:`mmekd.models.plain_net`'s; this module adds configs, files and
checkpoints.
"""
import copy
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import mmengine
import mmpretrain
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader
from mmpretrain.registry import MODELS

from mmekd.models.plain_net import (ExportError, check_exportable, check_net,
                                    net_arch_name, plain_model_cfg, plain_net)
from mmekd.models.utils import recalibrate_bn as recalibrate_net_bn
from mmekd.utils.atomic_save import (atomic_output, atomic_write,
                                     check_outputs_not_inputs)
from mmekd.utils.checkpoint_keys import compare_state_dict, warn_shared_stats
from mmekd.utils.finite import check_finite
from mmekd.utils.literal_config import LiteralConfigError, read_literal_config
from mmekd.version import __version__ as mmekd_version
from mmekd.vocabulary import private_net_of_key, unwrap_model
from .channel_order import (describe_channel_order, model_channel_order,
                            set_file_channel_order, to_file_channel_order)
from .stock_config import (folder_names, image_folder_datasets, mmekd_types,
                           single_net_evaluator, stock_dataloaders,
                           stock_training_machinery, write_image_folder)

__all__ = [
    'ExportError', 'check_net', 'net_arch_name', 'plain_model_cfg',
    'export_subnet', 'check_exact',
    'load_config', 'build_model', 'read_checkpoint', 'trained_nets',
    'load_ddnn_model', 'check_net_in_checkpoint', 'exported_config',
    'exported_checkpoint', 'export_to_files'
]


def export_subnet(model: nn.Module, net: str,
                  model_cfg) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """:func:`mmekd.models.plain_net.plain_net` of ``net``, with the
    channel order image files need: given the whole config, its ``to_rgb``
    makes image files (read as BGR) reach the model in its training channel
    order (:mod:`mmekd.apis.channel_order`).

    Returns:
        tuple[dict, OrderedDict]: The plain model's config and state dict.
    """
    cfg, state_dict = plain_net(model, net, model_cfg)
    set_file_channel_order(cfg, model_cfg)
    return cfg, state_dict


def check_exact(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                what: str = 'checkpoint') -> None:
    """Raise :class:`ExportError` listing missing, unexpected and mismatched
    keys unless ``state_dict`` fits ``model`` exactly (the strict check of
    export and test; loading checks with
    :func:`mmekd.utils.check_loadable`, which allows extra keys).

    A DDNN model's :meth:`load_state_dict` fills private BatchNorm and
    classifier copies a checkpoint lacks from the full net's values (so plain
    ResNet weights load); the nets such a checkpoint does not contain are
    reported here as missing, so that exporting them cannot silently give the
    full net's values. Missing per-net BatchNorm statistics
    (``norm_sharing='stats'``, a checkpoint trained with shared statistics)
    are logged: the nets keep the shared ones they were tested with.
    """
    model = unwrap_model(model)
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
    # The safe loader (installed by ``import mmekd``) serves local files.
    ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    if not isinstance(ckpt, dict):
        raise ExportError(f'{checkpoint} is not a checkpoint dict')
    state_dict = ckpt.get('state_dict', ckpt)
    state_dict = OrderedDict(
        (re.sub(r'^module\.', '', k), v) for k, v in state_dict.items()
        if isinstance(v, torch.Tensor))
    meta = ckpt.get('meta', {}) if 'state_dict' in ckpt else {}
    return state_dict, dict(meta or {})


def trained_nets(meta: dict, backbone: nn.Module,
                 source: str = 'the checkpoint'
                 ) -> Optional[Dict[str, tuple]]:
    """``{net: block indices per stage}`` of the model a checkpoint was
    trained as, read from the config MMEngine stores in ``meta['cfg']``,
    or None when the checkpoint does not say (no config, or a backbone
    of another family).

    The stored text is read as data (:func:`read_literal_config`), never
    executed, and nothing it describes is built: ``backbone`` (the
    depth-dynamic backbone built from the user's config, whose sizes bound
    everything) computes the nets from its numbers
    (:meth:`~mmekd.models.backbones.DepthDynamicMixin.stored_nets`).

    Raises:
        ExportError: ``meta['cfg']`` is not a config of literal
            assignments, or its backbone is not ``backbone``'s
            architecture.
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
    model = cfg.get('model')
    stored = model.get('backbone') if isinstance(model, dict) else None
    if not isinstance(stored, dict):
        return None
    try:
        return backbone.stored_nets(stored)
    except ValueError as e:
        raise ExportError(f"{source} {e} (read from its meta['cfg'])"
                          ) from None


def load_ddnn_model(config, checkpoint: Optional[str] = None) -> nn.Module:
    """Build the DDNN classifier of ``config`` and load ``checkpoint``,
    failing with the list of missing / unexpected / mismatched keys if the
    checkpoint belongs to another model.

    The checkpoint's meta (``meta``) and its trained nets are kept on the
    model as ``model.checkpoint_meta``.
    """
    cfg = load_config(config)
    model = build_model(cfg)
    check_exportable(model)
    model.checkpoint_meta = {}
    if checkpoint is not None:
        state_dict, meta = read_checkpoint(checkpoint)
        check_exact(model, state_dict, f'checkpoint {checkpoint}')
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
    backbone = unwrap_model(model).backbone
    nets = trained_nets(getattr(model, 'checkpoint_meta', {}), backbone,
                        f'checkpoint {path}' if path else 'the checkpoint')
    if nets is None:
        return
    blocks = backbone.net_blocks[net]
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
        tuple[str, str]: Paths of the written config and checkpoint (each
        written atomically).

    Raises:
        OutputIsInputError: An output would overwrite ``config`` or
            ``checkpoint``.
    """
    cfg = load_config(config)
    model = load_ddnn_model(cfg, checkpoint)
    check_net(model, net)
    if checkpoint is not None:
        check_net_in_checkpoint(model, net)
    if recalibrate_bn:
        with DefaultScope.overwrite_default_scope(
                cfg.get('default_scope', 'mmpretrain')):
            loader = Runner.build_dataloader(cfg.train_dataloader)
        # Record the batches actually used: a short loader gives fewer.
        recalibrate_bn = recalibrate_net_bn(model, loader, recalibrate_bn,
                                            net=net)
    plain_cfg, state_dict = export_subnet(model, net, cfg)
    backbone = model.backbone
    arch = net_arch_name(model, net)
    src_name = osp.splitext(osp.basename(cfg.filename or 'config.py'))[0]
    name = name or f'{src_name}_{net}-{arch}'
    cfg_path = osp.join(out_dir, f'{name}.py')
    ckpt_path = osp.join(out_dir, f'{name}.pth')
    check_outputs_not_inputs(
        {'exported config': cfg_path, 'exported checkpoint': ckpt_path},
        dict(config=cfg.filename, checkpoint=checkpoint))
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
    atomic_write(cfg_path, text)
    with atomic_output(ckpt_path) as tmp:
        torch.save(ckpt, tmp)
    # What we promise: a plain checkpoint, loadable without any allow-list.
    torch.load(ckpt_path, map_location='cpu', weights_only=True)
    mmengine.Config.fromfile(cfg_path)
    return cfg_path, ckpt_path

# Copyright (c) mmekd contributors. All rights reserved.
"""The config of an exported net, runnable with MMEngine / MMPretrain alone.

mmekd's training machinery (hooks, optimiser wrapper, DDP wrapper, data
preprocessor) subclasses MMEngine / MMPretrain components. In an exported
config each such type becomes the stock class it extends, with the arguments
that class takes (:func:`stock_component`); a hook that extends only
MMEngine's bare ``Hook`` (nothing stock does its job) is dropped. Datasets:

- an mmekd dataset that extends a stock one (``mmekd.CIFAR100`` ->
  ``CIFAR100``) becomes that one; a held-out validation part of the training
  split (``subset='val'``) becomes the official test split;
- any other (e.g. ``mmekd.Digits``), or every dataset when asked, is written
  as PNG files in their true colours plus an annotation list
  (:func:`write_image_folder`) and read with MMPretrain's ``CustomDataset``,
  which reads them as BGR like any image file;
- ``mmekd.InMemoryBatchDataset`` (the fast data path) is replaced by the
  dataset it wraps, with the default collate function.

Every change is listed in the notes written at the top of the config, and
the result is checked to name no ``mmekd.`` type outside a model that needs
mmekd (:func:`mmekd_types`).
"""
import copy
import inspect
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

from mmengine.config import Config

from .channel_order import dataset_channel_order, to_file_colours

# Modules whose classes a stock MMPretrain install has.
_STOCK_MODULES = ('mmengine.', 'mmpretrain.')
_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
_SPLITS = {'train_dataloader': 'train', 'val_dataloader': 'val',
           'test_dataloader': 'test'}


def _is_mmekd_type(cfg) -> bool:
    return isinstance(cfg, dict) and str(cfg.get('type', '')).startswith(
        'mmekd.')


def stock_base(cls: type) -> Optional[type]:
    """The first class in ``cls``'s MRO that MMEngine or MMPretrain
    defines, or None."""
    for base in cls.__mro__:
        if base.__module__.startswith(_STOCK_MODULES):
            return base
    return None


def init_arguments(cls: type) -> Optional[set]:
    """Names of the arguments ``cls(...)`` accepts, following ``**kwargs``
    into the base classes' ``__init__``; None where any name is accepted
    (``**kwargs`` reaches ``object``)."""
    names = set()
    for base in cls.__mro__:
        if base is object:
            return None
        if '__init__' not in vars(base):
            continue
        params = list(inspect.signature(base.__init__).parameters.values())
        names |= {
            p.name
            for p in params[1:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
    return None


def stock_component(cfg: dict, registry, where: str,
                    notes: List[str]) -> Optional[dict]:
    """``cfg`` with its ``mmekd.`` type replaced by the stock class it
    extends, keeping the arguments that class accepts.

    Args:
        cfg (dict): A component config (``type`` + arguments).
        registry: The MMPretrain registry the type lives in.
        where (str): Config field, for the notes.
        notes (list[str]): Receives one line per change.

    Returns:
        dict | None: The stock config (``cfg`` itself if it has no mmekd
        type), or None where only MMEngine's bare ``Hook`` is extended.
    """
    if not _is_mmekd_type(cfg):
        return cfg
    cls = registry.get(cfg['type'])
    base = stock_base(cls)
    if base is None or base.__name__ == 'Hook':
        notes.append(f'{where}: dropped {cfg["type"]} (mmekd only, no '
                     'stock counterpart)')
        return None
    accepted = init_arguments(base)
    new = {
        k: v
        for k, v in cfg.items()
        if k == 'type' or accepted is None or k in accepted
    }
    new['type'] = base.__name__
    dropped = sorted(set(cfg) - set(new))
    notes.append(f'{where}: {cfg["type"]} -> {base.__name__}' + (
        f' (dropped {", ".join(f"{k}={cfg[k]!r}" for k in dropped)})'
        if dropped else ''))
    return new


def _unwrap_dataset(loader: dict, key: str, notes: List[str]) -> dict:
    """The dataset a loader really reads: an mmekd wrapper without a stock
    counterpart (``InMemoryBatchDataset``) is replaced by what it wraps."""
    from mmpretrain.registry import DATASETS
    ds = loader['dataset']
    while _is_mmekd_type(ds) and isinstance(ds.get('dataset'), dict) and \
            stock_base(DATASETS.get(ds['type'])) is None:
        notes.append(f'{key}: {ds["type"]} replaced by the dataset it wraps')
        ds = ds['dataset']
    return ds


def image_folder_datasets(config: Config, all_datasets: bool = False
                          ) -> Dict[str, dict]:
    """The datasets of ``config``'s loaders that an exported config reads as
    image files: those of mmekd classes without a specific stock counterpart
    (every one if ``all_datasets``).

    Returns:
        dict: Loader key -> its (unwrapped) dataset config.
    """
    out = {}
    for key in _LOADERS:
        loader = config.get(key)
        if not isinstance(loader, dict) or not isinstance(
                loader.get('dataset'), dict):
            continue
        ds = _unwrap_dataset(copy.deepcopy(loader), key, [])
        if all_datasets:
            out[key] = ds
            continue
        if not _is_mmekd_type(ds):
            continue
        if not _has_stock_dataset(ds):
            out[key] = ds
    return out


def _has_stock_dataset(ds: dict) -> bool:
    """Whether an mmekd dataset extends a specific stock dataset (not just
    the generic ``BaseDataset``)."""
    from mmpretrain.registry import DATASETS
    base = stock_base(DATASETS.get(ds['type']))
    return base is not None and base.__name__ != 'BaseDataset'


def write_image_folder(dataset_cfg: dict, data_root: str, name: str) -> dict:
    """Write a dataset's images as ``<data_root>/<name>/<class>/<i>.png`` and
    the list ``<data_root>/<name>.txt`` (``<path> <label>`` per line).

    Images are written in their true colours: an image viewer shows them
    as they are, and ``LoadImageFromFile`` reads them as BGR like any image
    file (the array of an RGB dataset such as CIFAR comes back with red and
    blue swapped, which the exported ``to_rgb`` undoes:
    :mod:`mmekd.apis.channel_order`).

    Args:
        dataset_cfg (dict): The dataset (its pipeline is not applied).
        data_root (str): Output folder.
        name (str): Name of this split's folder and list.

    Returns:
        dict: A ``CustomDataset`` config (without pipeline) reading it.

    Raises:
        ChannelOrderError: The channel order of the dataset's arrays is
            unknown (see :func:`dataset_channel_order`).
    """
    import mmcv
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS
    cfg = dict(copy.deepcopy(dataset_cfg), pipeline=[])
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = DATASETS.build(cfg)
    classes = [str(c) for c in dataset.metainfo.get('classes') or ()]
    order = dataset_channel_order(cfg)
    lines = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        label = int(info['gt_label'])
        folder = f'{label:04d}_{classes[label]}' if classes else f'{label:04d}'
        rel = f'{name}/{folder}/{i:06d}.png'
        img = to_file_colours(info['img'], order)
        if not mmcv.imwrite(img, osp.join(data_root, rel)):
            raise OSError(f'could not write {osp.join(data_root, rel)}')
        lines.append(f'{rel} {label}')
    os.makedirs(data_root, exist_ok=True)
    with open(osp.join(data_root, f'{name}.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    out = dict(type='CustomDataset', data_root=data_root,
               ann_file=f'{name}.txt', with_label=True)
    if classes:
        out['metainfo'] = dict(classes=classes)
    return out


def _stock_dataset(ds: dict, key: str, notes: List[str]) -> dict:
    """An mmekd dataset with a specific stock counterpart, as that one."""
    from mmpretrain.registry import DATASETS
    if not _is_mmekd_type(ds) or not _has_stock_dataset(ds):
        return ds  # left for the final check to report
    new = stock_component(ds, DATASETS, f'{key}.dataset', notes)
    if ds.get('subset') == 'val' and 'split' in new:
        new['split'] = 'test'
        notes.append(f'{key}.dataset: the held-out part of the training '
                     "split became the official test split (split='test')")
    return new


def _stock_loader(loader: dict, key: str, folder: Optional[dict],
                  notes: List[str]) -> dict:
    loader = copy.deepcopy(loader)
    ds = _unwrap_dataset(loader, key, notes)
    pipeline = list(ds.get('pipeline') or [])
    if folder is not None:
        notes.append(f'{key}.dataset: {ds.get("type")} read as image files '
                     f'({folder["data_root"]}/{folder["ann_file"]}, '
                     'CustomDataset)')
        ds = dict(folder, pipeline=[dict(type='LoadImageFromFile')] +
                  pipeline)
    else:
        ds = _stock_dataset(ds, key, notes)
    loader['dataset'] = ds
    if _is_mmekd_type(loader.get('collate_fn')):
        notes.append(f'{key}: dropped collate_fn '
                     f'{loader["collate_fn"]["type"]} (default collate)')
        loader.pop('collate_fn')
    return loader


def _stock_preprocessor(cfg: Optional[dict], where: str,
                        notes: List[str]) -> Optional[dict]:
    from mmpretrain.registry import MODELS
    if not _is_mmekd_type(cfg):
        return cfg
    return stock_component(cfg, MODELS, where, notes)


def stock_training_machinery(d: dict, notes: List[str]) -> dict:
    """Replace mmekd hooks, optimiser / model wrappers and data
    preprocessors in config dict ``d`` (in place) by their stock bases."""
    from mmpretrain.registry import HOOKS, MODEL_WRAPPERS, OPTIM_WRAPPERS
    hooks = d.get('default_hooks') or {}
    for name in [n for n, h in hooks.items() if _is_mmekd_type(h)]:
        new = stock_component(hooks[name], HOOKS, f'default_hooks.{name}',
                              notes)
        if new is None:
            hooks.pop(name)  # (None would disable MMEngine's default)
        else:
            hooks[name] = new
    custom = [
        stock_component(h, HOOKS, 'custom_hooks', notes)
        for h in d.get('custom_hooks') or []
    ]
    if 'custom_hooks' in d:
        d['custom_hooks'] = [h for h in custom if h is not None]
    if isinstance(d.get('optim_wrapper'), dict):
        if str(d['optim_wrapper'].get('constructor', '')).startswith('mmekd.'):
            notes.append(
                'optim_wrapper: dropped constructor='
                f"{d['optim_wrapper'].pop('constructor')!r} (MMEngine's "
                'DefaultOptimWrapperConstructor: torch picks the optimizer '
                'implementation)')
        d['optim_wrapper'] = stock_component(d['optim_wrapper'],
                                             OPTIM_WRAPPERS, 'optim_wrapper',
                                             notes)
    if isinstance(d.get('model_wrapper_cfg'), dict):
        wrapper = stock_component(d['model_wrapper_cfg'], MODEL_WRAPPERS,
                                  'model_wrapper_cfg', notes)
        if wrapper is None:
            d.pop('model_wrapper_cfg')
        else:
            d['model_wrapper_cfg'] = wrapper
    for where, holder in (('data_preprocessor', d),
                          ('model.data_preprocessor', d.get('model') or {})):
        if holder.get('data_preprocessor') is not None:
            holder['data_preprocessor'] = _stock_preprocessor(
                holder['data_preprocessor'], where, notes)
    return d


def stock_dataloaders(d: dict, folders: Dict[str, dict],
                      notes: List[str]) -> dict:
    """Give config dict ``d`` (in place) stock datasets; ``folders`` maps a
    loader key to the ``CustomDataset`` of its written images."""
    for key in _LOADERS:
        if isinstance(d.get(key), dict) and isinstance(
                d[key].get('dataset'), dict):
            d[key] = _stock_loader(d[key], key, folders.get(key), notes)
    if str(d.get('dataset_type', '')).startswith('mmekd.'):
        # A base config's variable, already substituted into the loaders.
        notes.append(f"dropped the variable dataset_type={d['dataset_type']!r}")
        d.pop('dataset_type')
    return d


def single_net_evaluator(evaluator):
    """An evaluator config with every ``mmekd.MultiNetAccuracy`` replaced by
    MMPretrain's ``Accuracy`` with the same top-k (and prefix).

    Example::

        >>> single_net_evaluator(dict(type='mmekd.MultiNetAccuracy',
        ...                           topk=(1, 5)))
        {'type': 'Accuracy', 'topk': (1, 5)}
    """
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


def mmekd_types(obj, path: str = '') -> List[Tuple[str, str]]:
    """``(field, type)`` of every ``mmekd.`` type name in a config dict."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += mmekd_types(v, f'{path}.{k}' if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found += mmekd_types(v, f'{path}[{i}]')
    elif isinstance(obj, str) and obj.startswith('mmekd.'):
        found.append((path, obj))
    return found


def folder_names(loaders: Dict[str, dict]) -> Dict[str, str]:
    """One folder name per distinct dataset: ``train``, ``val``, ``test``
    (a loader with the same dataset as an earlier one shares its name)."""
    names, seen = {}, []
    for key, ds in loaders.items():
        for other_key, other in seen:
            if other == ds:
                names[key] = names[other_key]
                break
        else:
            names[key] = _SPLITS[key]
            seen.append((key, ds))
    return names

# Copyright (c) mmekd contributors. All rights reserved.
"""The CIFAR-100 reproduction of the DDNN-EKD claim, as data: its rows and
the fixed recipe every run gets.

A row is a DDNN config in ``configs/reproduce_cifar100/<row>.py`` (each
with ``configs/ddnn_r34_cifar100_fastdata.py`` as its base); it is compared
with each of its nets trained alone (:class:`mmekd.apis.comparison.
Comparison`), so "ResNet-18 alone" is the ``sub0`` of every ResNet-34 row,
trained once. :func:`recipe` is what every run of a reproduction shares
(epochs, schedule, split, batch), merged into the row's config.

Example::

    cfg = row_config('configs', 'ddnn_ekd', recipe('data/cifar100', 17,
                                                   schedule='cosine'))
"""
import copy
import os.path as osp
from collections import OrderedDict
from typing import List, Optional

import numpy as np
from mmengine.config import Config

from mmekd.datasets.cifar import load_cifar_batch

ROWS_DIR = 'reproduce_cifar100'  # under the configs folder
# The rows, by what they test.
ROW_GROUPS = OrderedDict(
    ablation=('ddnn', 'ddnn_kl', 'ddnn_at'),
    claim=('ddnn_ekd', ),
    levers=('ekd_sub_kd_only', 'ekd_sandwich', 'ekd_t1', 'ekd_private_bn',
            'adaptive_depth'),
    bottleneck=('ddnn_b', 'ddnn_b_ekd'),
)
ALL_ROWS = tuple(r for rows in ROW_GROUPS.values() for r in rows)
BASIC_ROWS = ROW_GROUPS['ablation'] + ROW_GROUPS['claim']
# The rows of the claim: every seed (the others may get fewer).
HEADLINE_ROWS = ('ddnn_ekd', 'ddnn_b_ekd')
# The claim (Zhao et al.): a sub-net gains >= 1.0 point over the same net
# alone, the full net loses at most 0.3.
CLAIM_TARGETS = dict(full=-0.3, sub=1.0)
# Rows of earlier versions that are now the nets alone of the rows above.
FORMER_ALONE_ROWS = dict(
    resnet18="the net 'sub0' of ddnn_ekd (and of every ResNet-34 row)",
    resnet34="the net 'full' of ddnn_ekd (and of every ResNet-34 row)",
    resnet34_2232="the net 'sub0' of adaptive_depth",
    resnet26b="the net 'sub0' of ddnn_b_ekd",
    resnet44b="the net 'sub1' of ddnn_b_ekd",
    resnet50="the net 'full' of ddnn_b_ekd")
CLASSES = 100


def row_config_path(configs_dir: str, row: str) -> str:
    """``<configs_dir>/reproduce_cifar100/<row>.py``.

    Raises:
        ValueError: ``row`` is not a row (a former alone row is named with
            the net that replaces it).
    """
    if row in FORMER_ALONE_ROWS:
        raise ValueError(f'{row} is no longer a row of its own: it is '
                         f'{FORMER_ALONE_ROWS[row]}, trained alone with it')
    if row not in ALL_ROWS:
        raise ValueError(f'unknown row {row!r}; rows: {list(ALL_ROWS)}')
    return osp.join(configs_dir, ROWS_DIR, f'{row}.py')


def recipe(data_root: str,
           epochs: int,
           schedule: str = 'step',
           split: str = 'val',
           val_per_class: int = 50,
           batch_size: int = 128,
           num_workers: int = 4,
           max_per_class: Optional[int] = None,
           fast_data: bool = True,
           stock_data: Optional[Config] = None) -> dict:
    """The fields every run of a reproduction gets (merged into the row's
    config; the seed is set per run).

    Args:
        data_root (str): Holds ``cifar-100-python/``.
        epochs (int): Training epochs; checkpoint and validation at the end.
        schedule (str): ``'step'`` (lr x0.2 at 30/60/80 % of the epochs) or
            ``'cosine'``.
        split (str): ``'val'``: train on the train file minus the last
            ``val_per_class`` images of every class, validate on those;
            ``'test'``: train on all of it, validate on the test file.
        batch_size, num_workers (int): Of the training loader (the fast data
            path keeps ``num_workers=0``).
        max_per_class (int, optional): Train on at most this many images per
            class (smoke runs).
        fast_data (bool): Keep the rows' fast data path (batches from
            memory, augmentation on the device); False: MMPretrain's
            pipeline with CPU workers (``stock_data``).
        stock_data (Config, optional): With ``fast_data=False``, the config
            with the stock ``train_pipeline`` and ``data_preprocessor``
            (``configs/_base_/datasets/cifar100_bs128.py``).

    Returns:
        dict: For :meth:`Config.merge_from_dict`.
    """
    if schedule == 'step':
        milestones = sorted({max(1, round(epochs * f))
                             for f in (0.3, 0.6, 0.8)})
        scheduler = dict(type='MultiStepLR', by_epoch=True,
                         milestones=milestones, gamma=0.2)
    elif schedule == 'cosine':
        scheduler = dict(type='CosineAnnealingLR', by_epoch=True, begin=0,
                         end=epochs, T_max=epochs)
    else:
        raise ValueError(f"schedule must be 'step' or 'cosine', got "
                         f'{schedule!r}')
    data_root = osp.abspath(data_root)
    if split == 'val':
        train_set = dict(split='train', val_per_class=val_per_class,
                         subset='train')
        val_set = dict(split='train', val_per_class=val_per_class,
                       subset='val')
    elif split == 'test':
        train_set = dict(split='train', val_per_class=0, subset='all')
        val_set = dict(split='test', val_per_class=0, subset='all')
    else:
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    train_set.update(data_root=data_root, max_per_class=max_per_class)
    val_set.update(data_root=data_root)
    workers = dict(num_workers=num_workers,
                   persistent_workers=num_workers > 0)
    out = {
        'train_cfg': dict(max_epochs=epochs, val_interval=epochs),
        'param_scheduler': dict(_delete_=True, **scheduler),
        'randomness': dict(deterministic=False),
        'val_dataloader': dict(dataset=val_set, **workers),
        'test_dataloader': dict(dataset=val_set, **workers),
        'default_hooks': dict(
            checkpoint=dict(interval=epochs, max_keep_ckpts=1,
                            save_best=None),
            logger=dict(interval=50)),
    }
    if fast_data:
        # The rows' InMemoryBatchDataset wraps the CIFAR-100 dataset.
        out['train_dataloader'] = dict(batch_size=batch_size,
                                       dataset=dict(dataset=train_set))
    else:
        if stock_data is None:
            raise ValueError('fast_data=False needs stock_data (the stock '
                             'pipeline and data preprocessor)')
        out['train_dataloader'] = dict(
            _delete_=True, batch_size=batch_size,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(type='mmekd.CIFAR100',
                         pipeline=stock_data.train_pipeline, **train_set),
            **workers)
        out['data_preprocessor'] = dict(_delete_=True,
                                        **stock_data.data_preprocessor)
    return out


def row_config(configs_dir: str, row: str, row_recipe: dict,
               cfg_options: Optional[dict] = None) -> Config:
    """A row's config with the recipe, then ``cfg_options``, merged in
    (both are left as they are: a merge consumes ``_delete_`` keys)."""
    cfg = Config.fromfile(row_config_path(configs_dir, row))
    cfg.merge_from_dict(copy.deepcopy(row_recipe))
    if cfg_options:
        cfg.merge_from_dict(copy.deepcopy(cfg_options))
    return cfg


def check_data(root: str, split: str = 'val',
               val_per_class: int = 50) -> List[str]:
    """What keeps ``root`` from holding the CIFAR-100 data a reproduction
    needs (empty: nothing): ``cifar-100-python/train`` and ``meta`` (and
    ``test`` for ``split='test'``) readable as CIFAR pickles (read as data,
    nothing unpickled runs), images of 3 x 32 x 32, labels 0..99 with more
    than ``val_per_class`` images each (``split='val'`` holds that many of
    every class out), 100 class names."""
    folder = osp.join(root, 'cifar-100-python')
    if not osp.isdir(folder):
        return [f'folder {folder} is missing (the data root must hold '
                "'cifar-100-python/' with the files 'train' and 'meta')"]
    names = ['train', 'meta'] + (['test'] if split == 'test' else [])
    missing = [f'file {osp.join(folder, n)} is missing' for n in names
               if not osp.isfile(osp.join(folder, n))]
    if missing:
        return missing
    try:
        train = load_cifar_batch(osp.join(folder, 'train'))
        meta = load_cifar_batch(osp.join(folder, 'meta'))
    except ValueError as e:
        return [str(e)]
    data, labels = train.get('data'), train.get('fine_labels')
    if data is None or labels is None:
        return [f"{folder}/train lacks 'data' or 'fine_labels' (has "
                f'{sorted(train)})']
    problems = []
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        problems.append(f"{folder}/train 'data' has shape {data.shape}, "
                        'expected (N, 3072)')
    if len(labels) != len(data):
        problems.append(f'{folder}/train has {len(data)} images but '
                        f'{len(labels)} labels')
    counts = np.bincount(np.asarray(labels, dtype=np.int64),
                         minlength=CLASSES)
    if len(counts) != CLASSES:
        problems.append(f'{folder}/train has labels up to {len(counts) - 1}'
                        f', expected 0..{CLASSES - 1}')
    if split == 'val':
        lacking = [c for c in range(min(CLASSES, len(counts)))
                   if counts[c] <= val_per_class]
        if lacking:
            problems.append(
                f'{folder}/train: classes {lacking[:10]}'
                f"{'...' if len(lacking) > 10 else ''} have <= "
                f'{val_per_class} images (the val split holds out the last '
                f'{val_per_class} of every class)')
    names = meta.get('fine_label_names')
    if names is None or len(names) != CLASSES:
        problems.append(f"{folder}/meta: 'fine_label_names' must list "
                        f'{CLASSES} names, got '
                        f'{None if names is None else len(names)}')
    return problems

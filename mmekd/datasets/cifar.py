# Copyright (c) mmekd contributors. All rights reserved.
"""CIFAR-10/100 from local files, without md5 checks or downloads."""
import io
import os.path as osp
import pickle
from typing import List, Optional

import numpy as np
from mmpretrain.datasets import CIFAR10 as _MMPretrainCIFAR10
from mmpretrain.datasets import CIFAR100 as _MMPretrainCIFAR100

from mmekd.registry import DATASETS


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of lists, strings and numpy arrays)
    and refuses anything else, so a tampered data file cannot run code."""

    _ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'),
        ('numpy._core.multiarray', '_reconstruct'),
        ('numpy', 'ndarray'),
        ('numpy', 'dtype'),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'refusing to unpickle {module}.{name}: a CIFAR batch holds only '
            'lists, strings and numpy arrays')


def load_cifar_batch(path: str) -> dict:
    """Read one CIFAR pickle batch (``data_batch_1``, ``train``, ``meta``)."""
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'CIFAR file {path} does not exist; data_root must contain the '
            "standard 'cifar-10-batches-py/' or 'cifar-100-python/' folder")
    with open(path, 'rb') as f:
        try:
            return _ArrayUnpickler(io.BytesIO(f.read()),
                                   encoding='latin1').load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise ValueError(f'{path} is not a valid CIFAR pickle batch: '
                             f'{e}') from None


class _LocalCIFARMixin:
    """Loads the standard pickle layout from ``data_root`` as it is (no md5
    check, no download: re-packed and offline copies work) and optionally
    carves a validation split out of it.

    Args:
        data_root (str): Folder that holds ``cifar-10-batches-py/`` or
            ``cifar-100-python/``.
        split (str): File split, ``'train'`` or ``'test'``.
        val_per_class (int): Images of every class held out as validation:
            the last ``val_per_class`` of each class in file order.
            Defaults to 0 (no hold-out).
        subset (str): With ``val_per_class``: ``'train'`` (the rest) or
            ``'val'`` (the held-out images). ``'all'`` (default) keeps all.
        max_per_class (int, optional): Keep at most the first this many images
            of every class of the chosen subset (small-data experiments).
        channel_order (str): ``'rgb'`` (default): the arrays as the CIFAR
            files store them, as MMPretrain's CIFAR datasets give them;
            ``'bgr'``: in the order OpenMMLab reads image files (what the
            config of an exported model uses, with ``to_rgb=True``).
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset`
            (``pipeline``, ``test_mode``, ``indices``...).
    """

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 val_per_class: int = 0,
                 subset: str = 'all',
                 max_per_class: Optional[int] = None,
                 channel_order: str = 'rgb',
                 **kwargs):
        if channel_order not in ('rgb', 'bgr'):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got "
                             f'{channel_order!r}')
        if split not in ('train', 'test'):
            raise ValueError(
                f"split must be 'train' or 'test', got {split!r}")
        if subset not in ('all', 'train', 'val'):
            raise ValueError(
                f"subset must be 'all', 'train' or 'val', got {subset!r}")
        if subset != 'all' and val_per_class <= 0:
            raise ValueError(f'subset={subset!r} needs val_per_class > 0')
        if val_per_class < 0:
            raise ValueError(f'val_per_class must be >= 0, got '
                             f'{val_per_class}')
        if max_per_class is not None and max_per_class < 1:
            raise ValueError(f'max_per_class must be >= 1, got '
                             f'{max_per_class}')
        if not data_root or not osp.isdir(
                osp.join(data_root, self.base_folder)):
            what = ('is not a directory' if not data_root
                    or not osp.isdir(data_root) else
                    f"has no '{self.base_folder}/' folder")
            raise FileNotFoundError(
                f'data_root {data_root!r} of {type(self).__name__} {what}; '
                f"it must contain '{self.base_folder}/' as extracted from "
                f'{self.url}. {self.root_hint}')
        self.val_per_class = val_per_class
        self.subset = subset
        self.max_per_class = max_per_class
        self.channel_order = channel_order
        kwargs.pop('download', None)
        super().__init__(
            data_root=data_root, split=split, download=False, **kwargs)

    def load_data_list(self) -> List[dict]:
        root = self.data_prefix['root']
        files = self.train_list if self.split == 'train' else self.test_list
        imgs, labels = [], []
        for file_name, _ in files:
            entry = load_cifar_batch(
                osp.join(root, self.base_folder, file_name))
            imgs.append(np.asarray(entry['data'], dtype=np.uint8))
            labels.extend(entry.get('labels', entry.get('fine_labels', [])))
        imgs = np.vstack(imgs).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        if self.channel_order == 'bgr':
            imgs = np.ascontiguousarray(imgs[..., ::-1])
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) != len(imgs):
            raise ValueError(f'{root}: {len(imgs)} images but {len(labels)} '
                             'labels')
        if self.CLASSES is None:
            meta = load_cifar_batch(
                osp.join(root, self.base_folder, self.meta['filename']))
            self._metainfo.setdefault('classes', meta[self.meta['key']])

        keep = self._select(labels)
        return [
            dict(img=imgs[i], gt_label=int(labels[i])) for i in keep
        ]

    def _select(self, labels: np.ndarray) -> np.ndarray:
        """Indices (in file order) of the chosen subset."""
        keep = []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            if self.val_per_class:
                if self.val_per_class >= len(idx):
                    raise ValueError(
                        f'val_per_class={self.val_per_class} leaves no '
                        f'training image for class {c} ({len(idx)} images)')
                if self.subset == 'train':
                    idx = idx[:-self.val_per_class]
                elif self.subset == 'val':
                    idx = idx[-self.val_per_class:]
            if self.max_per_class is not None:
                idx = idx[:self.max_per_class]
            keep.append(idx)
        return np.sort(np.concatenate(keep))

    def extra_repr(self) -> List[str]:
        return super().extra_repr() + [
            f'Subset: \t{self.subset} (val_per_class={self.val_per_class}, '
            f'max_per_class={self.max_per_class})'
        ]


@DATASETS.register_module()
class CIFAR10(_LocalCIFARMixin, _MMPretrainCIFAR10):
    __doc__ = ('CIFAR-10 from local files.\n\n' +
               (_LocalCIFARMixin.__doc__ or ''))
    root_hint = ('Set data_root in the config or with --cfg-options '
                 'train_dataloader.dataset.data_root=PATH.')


@DATASETS.register_module()
class CIFAR100(_LocalCIFARMixin, _MMPretrainCIFAR100):
    __doc__ = ('CIFAR-100 (fine labels) from local files.\n\n' +
               (_LocalCIFARMixin.__doc__ or ''))
    # configs/_base_/datasets/cifar100_bs128.py reads this variable.
    root_hint = ('The mmekd CIFAR-100 configs read data_root from '
                 '$CIFAR100_ROOT (default data/cifar100): run e.g. '
                 'CIFAR100_ROOT=/path/to/cifar100 python tools/train.py '
                 'CONFIG, where /path/to/cifar100 holds cifar-100-python/.')

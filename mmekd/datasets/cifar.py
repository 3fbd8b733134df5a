# Copyright (c) mmekd contributors. All rights reserved.
"""CIFAR-10/100 from local files, without md5 checks or downloads."""
import _compat_pickle
import os.path as osp
import pickle
from typing import Any, List, Optional, Tuple

import numpy as np
from mmpretrain.datasets import CIFAR10 as _MMPretrainCIFAR10
from mmpretrain.datasets import CIFAR100 as _MMPretrainCIFAR100

from mmekd.registry import DATASETS
from mmekd.utils.regular_file import NotARegularFileError, open_regular_file
from mmekd.utils.safe_objects import (ArrayState, UnsafeCheckpointError,
                                      array_layout, array_pickle_stand_ins,
                                      materialize)

ROW_BYTES = 3 * 32 * 32  # one image: the R, G and B planes of 32 x 32
_ROW_SHAPES = ((ROW_BYTES, ), (3, 32, 32))


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch (dicts of lists, strings and numpy arrays)
    into data: the numpy names map to the inert stand-ins of
    :mod:`mmekd.utils.safe_objects` (no numpy code runs on the file's
    bytes), and anything else is refused."""

    _STAND_INS = {name: obj for obj, name in array_pickle_stand_ins()}

    def find_class(self, module, name):
        # Python 2 names, as pickle.Unpickler maps them (fix_imports).
        module, name = _compat_pickle.NAME_MAPPING.get(
            (module, name), (_compat_pickle.IMPORT_MAPPING.get(
                module, module), name))
        stand_in = self._STAND_INS.get(f'{module}.{name}')
        if stand_in is None:
            raise pickle.UnpicklingError(
                f'refusing to unpickle {module}.{name}: a CIFAR batch holds '
                'only lists, strings and numpy arrays')
        return stand_in


def load_cifar_batch(path: str) -> dict:
    """Read one CIFAR pickle batch (``data_batch_1``, ``train``, ``meta``)
    as data: Python 2 or 3 pickles, protocols 0 to 4.

    Its numpy arrays are rebuilt from validated bytes, never by numpy's own
    unpickling functions; a batch's ``'data'`` must be uint8 rows of
    :data:`ROW_BYTES` bytes, checked before anything is allocated.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a CIFAR batch: not a regular file, not a
            pickle of a dict of lists, strings and numpy arrays, or
            ``'data'`` that is not rows of images. The message names the
            file.
    """
    invalid = f'{path} is not a valid CIFAR pickle batch'
    try:
        with open_regular_file(path) as f:
            entry = _BatchUnpickler(f, encoding='latin1').load()
    except FileNotFoundError:
        raise FileNotFoundError(
            f'CIFAR file {path} does not exist; data_root must contain the '
            "standard 'cifar-10-batches-py/' or 'cifar-100-python/' folder"
        ) from None
    except (IsADirectoryError, NotARegularFileError) as e:
        kind = getattr(e, 'kind', 'a directory')
        raise ValueError(
            f'CIFAR file {path} is {kind}, not a regular file') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
            KeyError, IndexError, AttributeError, MemoryError,
            RecursionError) as e:  # what garbage makes the unpickler raise
        reason = str(e).splitlines()[0] if str(e) else ''
        if not isinstance(e, pickle.UnpicklingError):
            reason = f'{type(e).__name__}: {reason}'
        raise ValueError(f'{invalid}: {reason}') from None
    if not isinstance(entry, dict):
        raise ValueError(
            f'{invalid}: it holds a {type(entry).__name__}, not a dict')
    if 'data' in entry:
        _check_rows(invalid, entry['data'])
    try:
        return materialize(entry)
    except UnsafeCheckpointError as e:
        raise ValueError(f'{invalid}: {e}') from None


def _check_rows(invalid: str, data: Any) -> None:
    """Refuse a batch's ``'data'`` that is not uint8 rows of
    :data:`ROW_BYTES` bytes, from what its pickle declares (before anything
    is allocated)."""
    if not isinstance(data, ArrayState):
        found = f'a {type(data).__name__}'
    else:
        try:
            shape, dtype = array_layout(data)
        except UnsafeCheckpointError as e:
            found = f'an invalid numpy array: {e}'
        else:
            if dtype == np.uint8 and shape[1:] in _ROW_SHAPES:
                return
            found = f'an array of shape {shape} and dtype {dtype}'
    raise ValueError(
        f"{invalid}: 'data' must hold uint8 rows of {ROW_BYTES} bytes (one "
        f'3x32x32 image each; shape (N, {ROW_BYTES}) or (N, 3, 32, 32)), '
        f'found {found}')


def _images_and_labels(path: str) -> Tuple[np.ndarray, List[int]]:
    """The ``'data'`` and the labels of the data batch ``path``."""
    entry = load_cifar_batch(path)
    data = entry.get('data')
    labels = entry.get('labels', entry.get('fine_labels'))
    if data is None or labels is None:
        raise ValueError(
            f"{path} is not a CIFAR data batch: it has no 'data' or no "
            f"'labels' / 'fine_labels' (its keys: {sorted(map(str, entry))})")
    if not (isinstance(labels, list) and len(labels) == len(data)
            and all(type(label) is int for label in labels)):
        found = (f'a list of {len(labels)}' if isinstance(labels, list) else
                 f'a {type(labels).__name__}')
        raise ValueError(
            f'{path}: the labels must be a list of one int per image '
            f'({len(data)} images), found {found}')
    return data, labels


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
            data, file_labels = _images_and_labels(
                osp.join(root, self.base_folder, file_name))
            imgs.append(data)
            labels.extend(file_labels)
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

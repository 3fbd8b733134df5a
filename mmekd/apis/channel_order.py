# Copyright (c) mmekd contributors. All rights reserved.
"""The channel order a model was trained on, and an exported config that
feeds image files to it in that order.

OpenMMLab reads image files as BGR (``LoadImageFromFile``, and
:class:`mmpretrain.ImageClassificationInferencer` for a path or an array),
and the data preprocessor's ``to_rgb`` flips them. Datasets that decode
their own arrays may give RGB instead: CIFAR's files store RGB, and the CIFAR
configs (as MMPretrain's) train with ``to_rgb=False``, so the model saw RGB
while an image file would reach it as BGR. An exported config therefore sets
``to_rgb`` for image files, and has its RGB array datasets give BGR arrays
(``mmekd.CIFAR10/100(channel_order='bgr')``), so that testing and fine-tuning
on them still give the model what it was trained on. (The order cannot be
changed in a pipeline: the inferencer runs image files through the test
pipeline too.)
"""
import copy
import warnings
from typing import List, Optional

import numpy as np

from mmekd.utils.refusal import RefusalError

RGB, BGR, GREY = 'rgb', 'bgr', 'grey'

# Datasets that decode their own arrays (no LoadImageFromFile in their
# pipeline), by type without scope: the order of the arrays they give.
_ARRAY_ORDER = {
    'CIFAR10': RGB,  # the CIFAR pickles store R, G, B planes
    'CIFAR100': RGB,
    'MNIST': GREY,
    'FashionMNIST': GREY,
    'Digits': GREY,  # mmekd.Digits: grey repeated over 3 channels
}
# Array datasets that can give their arrays in file (BGR) order.
_CAN_GIVE_BGR = ('mmekd.CIFAR10', 'mmekd.CIFAR100')
_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _type(cfg: dict) -> str:
    return str(cfg.get('type', '')).split('.')[-1]


def dataset_channel_order(dataset: dict) -> Optional[str]:
    """Channel order of the images a dataset config's pipeline gives.

    Args:
        dataset (dict): A dataset config (wrappers with ``dataset`` or
            ``datasets`` are followed).

    Returns:
        str | None: ``'bgr'`` (read by ``LoadImageFromFile``), ``'rgb'``,
        ``'grey'`` (any order gives the same image), or None if unknown.
    """
    for t in dataset.get('pipeline') or []:
        if _type(t) == 'LoadImageFromFile':
            return GREY if t.get('color_type') in ('grayscale', 'unchanged'
                                                   ) else BGR
    if _type(dataset) in _ARRAY_ORDER:
        return dataset.get('channel_order') or _ARRAY_ORDER[_type(dataset)]
    if isinstance(dataset.get('dataset'), dict):
        return dataset_channel_order(dataset['dataset'])
    if isinstance(dataset.get('datasets'), (list, tuple)):
        orders = {dataset_channel_order(d) for d in dataset['datasets']}
        return orders.pop() if len(orders) == 1 else None
    return None


class ChannelOrderError(RefusalError, ValueError):
    """The channel order of a dataset's arrays is unknown."""


def to_file_colours(img: np.ndarray, order: Optional[str]) -> np.ndarray:
    """An image array of a dataset, in the BGR order in which OpenCV (and
    so ``mmcv.imwrite``) writes true colours.

    Args:
        img (np.ndarray): ``(H, W, 3)`` or ``(H, W)``, as the dataset gives
            it.
        order (str | None): Its channel order
            (:func:`dataset_channel_order`).

    Returns:
        np.ndarray: ``img`` with red and blue swapped if it is RGB, else
        ``img`` itself.

    Raises:
        ChannelOrderError: ``order`` is unknown for a colour image.

    Example::

        >>> rgb = np.zeros((2, 2, 3), np.uint8); rgb[..., 0] = 255  # red
        >>> to_file_colours(rgb, 'rgb')[0, 0].tolist()  # BGR: red last
        [0, 0, 255]
    """
    if img.ndim == 2 or order in (BGR, GREY):
        return img
    if order == RGB:
        return np.ascontiguousarray(img[..., ::-1])
    raise ChannelOrderError(
        'cannot tell the channel order of the dataset\'s arrays (no '
        'LoadImageFromFile, not a known array dataset), so its images '
        'cannot be written in their true colours; give the dataset a '
        "'channel_order' or use one whose order is known")


def _preprocessor(cfg: dict) -> dict:
    model = cfg.get('model') or {}
    return model.get('data_preprocessor') or cfg.get(
        'data_preprocessor') or {}


def model_channel_order(cfg) -> Optional[str]:
    """Channel order of the model's input in training: that of the training
    images, flipped if the data preprocessor has ``to_rgb=True``.

    Args:
        cfg (dict | Config): A training config.

    Returns:
        str | None: ``'rgb'``, ``'bgr'``, ``'grey'`` or None (unknown).
    """
    loader = cfg.get('train_dataloader') or {}
    source = dataset_channel_order(loader.get('dataset') or {})
    if source not in (RGB, BGR):
        return source
    if not _preprocessor(cfg).get('to_rgb', False):
        return source
    return RGB if source == BGR else BGR


def _rgb_array_datasets(cfg) -> List[dict]:
    """The dataset configs of ``cfg``'s dataloaders that give RGB arrays
    (the innermost ones, through wrappers)."""
    found = []

    def walk(dataset):
        if not isinstance(dataset, dict):
            return
        if isinstance(dataset.get('dataset'), dict):
            walk(dataset['dataset'])
        elif isinstance(dataset.get('datasets'), (list, tuple)):
            for d in dataset['datasets']:
                walk(d)
        elif dataset_channel_order(dataset) == RGB:
            found.append(dataset)

    for key in _LOADERS:
        walk((cfg.get(key) or {}).get('dataset'))
    return found


def set_file_channel_order(plain_cfg: dict, cfg) -> Optional[str]:
    """Set ``to_rgb`` of an exported model config so that an image read as
    BGR reaches the model in its training order (in place).

    Args:
        plain_cfg (dict): The exported model's config.
        cfg (dict | Config): The training config it comes from; a bare model
            config (no ``train_dataloader``) leaves ``plain_cfg`` as it is.

    Returns:
        str | None: :func:`model_channel_order` of ``cfg`` if ``to_rgb`` is
        now right for image files, else None (with a warning).
    """
    if not cfg.get('train_dataloader'):
        return None
    order = model_channel_order(cfg)
    if order is None:
        warnings.warn(
            'cannot tell the channel order of the training images (dataset '
            f'{cfg["train_dataloader"].get("dataset", {}).get("type")!r} has '
            'no LoadImageFromFile and is not a known array dataset): the '
            'exported to_rgb is kept as trained; check it before inferring '
            'on image files', stacklevel=2)
        return None
    if order == GREY:
        return order
    fixed = sorted({str(d.get('type')) for d in _rgb_array_datasets(cfg)
                    if d.get('type') not in _CAN_GIVE_BGR})
    if fixed:
        warnings.warn(
            f'the datasets {fixed} give RGB arrays and cannot give them in '
            'the BGR order of image files: the exported to_rgb is kept as '
            'trained, so image files reach the model with red and blue '
            f'swapped; use {" or ".join(_CAN_GIVE_BGR)}', stacklevel=2)
        return None
    # (No data_preprocessor: ImageClassifier's default, with to_rgb=False.)
    plain_cfg['data_preprocessor'] = dict(
        plain_cfg.get('data_preprocessor') or {}, to_rgb=order == RGB)
    return order


def to_file_channel_order(cfg: dict, order: Optional[str]) -> List[str]:
    """Make an exported config's datasets give BGR arrays, as image files
    are read, and its top-level data preprocessor the model's (in place).

    Args:
        cfg (dict): The exported config (``model`` already exported).
        order (str | None): What :func:`set_file_channel_order` returned;
            unless ``'rgb'`` or ``'bgr'``, nothing changes.

    Returns:
        list[str]: Notes for the config's header.
    """
    if order not in (RGB, BGR):
        return []
    model_pre = (cfg.get('model') or {}).get('data_preprocessor')
    if model_pre is not None and cfg.get('data_preprocessor') is not None:
        cfg['data_preprocessor'] = copy.deepcopy(model_pre)
    arrays = _rgb_array_datasets(cfg)
    datasets = [d for d in arrays if d.get('type') in _CAN_GIVE_BGR]
    stock = sorted({str(d.get('type')) for d in arrays
                    if d.get('type') not in _CAN_GIVE_BGR})
    for d in datasets:
        d['channel_order'] = BGR
    notes = []
    if datasets:
        types = sorted({str(d['type']) for d in datasets})
        notes.append(f'channel order: the datasets {types} give BGR arrays '
                     "(channel_order='bgr'), as image files are read; the "
                     f'data preprocessor has to_rgb={order == RGB}')
    if stock:
        pre = (cfg.get('model') or {}).get('data_preprocessor') or {}
        for_files = bool(pre.get('to_rgb', False)) == (order == RGB)
        msg = (f'channel order: the datasets {stock} give RGB arrays, while '
               'image files are read as BGR; one to_rgb cannot serve both: ' +
               ('it is set for image files, so testing on these datasets '
                'here swaps red and blue' if for_files else
                'it is kept for these datasets, so image files reach the '
                'model with red and blue swapped') +
               '. Export with tools/export_subnet.py --data-dir to test on '
               'the same images written as files')
        warnings.warn(msg, stacklevel=2)
        notes.append(msg)
    return notes


def describe_channel_order(order: Optional[str]) -> str:
    """One sentence on what the model expects, for headers and metadata."""
    if order == RGB:
        return ('The model was trained on RGB input: image files, read as '
                'BGR, are flipped by the data preprocessor (to_rgb=True).')
    if order == BGR:
        return ('The model was trained on BGR input: image files are used '
                'as read, in BGR (to_rgb=False).')
    if order == GREY:
        return 'The model was trained on grey images: channel order is moot.'
    return ('The channel order of the training images is unknown: check '
            'to_rgb before inferring on image files.')

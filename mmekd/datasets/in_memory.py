# Copyright (c) mmekd contributors. All rights reserved.
"""Whole training batches of a small image dataset served from memory.

MMEngine's stock loader builds every sample in a worker (pipeline, one
``DataSample`` and one small tensor each) and ships it to the main process,
where unpickling the samples costs more than the GPU step of a CIFAR-sized
network. :class:`InMemoryBatchDataset` keeps the decoded images as one
``uint8`` tensor and answers a whole batch of indices with one gather, in
the main process (``num_workers=0``). Augmentation runs on the device in
:class:`mmekd.GPUAugmentPreprocessor`.
"""
from typing import List, Sequence, Union

import numpy as np
import torch
from mmpretrain.datasets.transforms import PackInputs
from mmpretrain.structures import DataSample
from torch.utils.data import Dataset

from mmekd.registry import DATASETS, FUNCTIONS


@DATASETS.register_module()
class InMemoryBatchDataset(Dataset):
    """Wraps a dataset of equally sized decoded images (CIFAR, Digits) and
    serves batches with one tensor gather.

    A batch is exactly what ``PackInputs`` + ``default_collate`` would give
    for the same indices: ``inputs`` a ``(N, C, H, W)`` ``uint8`` tensor and
    ``data_samples`` a list of :class:`DataSample` with ``gt_label``. The
    DataLoader finds the batch path through ``__getitems__``; use it with
    ``collate_fn=dict(type='mmekd.batch_collate')``, ``num_workers=0`` and
    a data preprocessor that augments on the device
    (:class:`mmekd.GPUAugmentPreprocessor`). The ``DataSample`` of every
    image is made once and reused across epochs (the data preprocessor
    replaces its ``gt_label`` by the same label on the device).

    Args:
        dataset (dict | Dataset): The wrapped dataset. Its pipeline must be
            empty or ``[PackInputs]``: the wrapper serves the decoded images
            as they are, so a CPU augmentation would be silently skipped.
        pin_memory (bool): Keep the images in page-locked memory and gather
            into page-locked batches (faster, asynchronous host-to-device
            copies). Defaults to False.
    """

    def __init__(self, dataset: Union[dict, Dataset],
                 pin_memory: bool = False):
        if isinstance(dataset, dict):
            dataset = DATASETS.build(dataset)
        transforms = getattr(getattr(dataset, 'pipeline', None),
                             'transforms', [])
        if not all(isinstance(t, PackInputs) for t in transforms):
            names = [type(t).__name__ for t in transforms]
            raise ValueError(
                f'InMemoryBatchDataset serves decoded images as they are, '
                f'but the wrapped dataset has the pipeline {names}; keep '
                'only PackInputs and augment on the device (e.g. '
                'mmekd.GPUAugmentPreprocessor)')
        if hasattr(dataset, 'full_init'):
            dataset.full_init()
        if len(dataset) == 0:
            raise ValueError('InMemoryBatchDataset: the wrapped dataset is '
                             'empty')
        infos = [dataset.get_data_info(i) for i in range(len(dataset))]
        shapes = {np.shape(info['img']) for info in infos}
        if len(shapes) != 1:
            raise ValueError(f'InMemoryBatchDataset needs images of one '
                             f'shape, got {sorted(shapes)}')
        imgs = np.stack([np.asarray(info['img']) for info in infos])
        if imgs.ndim == 3:  # grey (N, H, W)
            imgs = imgs[..., None]
        if imgs.dtype != np.uint8:
            raise ValueError(f'InMemoryBatchDataset needs uint8 images, '
                             f'got {imgs.dtype}')
        images = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
        self.images = images.pin_memory() if pin_memory else images
        self.pin_memory = pin_memory
        self.labels = torch.as_tensor([int(info['gt_label'])
                                       for info in infos])
        self.metainfo = dict(dataset.metainfo)
        self._data_samples = [
            DataSample().set_gt_label(label) for label in self.labels
        ]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> dict:
        return dict(
            inputs=self.images[idx],
            data_samples=DataSample().set_gt_label(self.labels[idx]))

    def __getitems__(self, indices: Sequence[int]) -> dict:
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.pin_memory:
            inputs = torch.empty((len(index), ) + self.images.shape[1:],
                                 dtype=self.images.dtype).pin_memory()
            torch.index_select(self.images, 0, index, out=inputs)
        else:
            inputs = self.images.index_select(0, index)
        return dict(
            inputs=inputs,
            data_samples=[self._data_samples[i] for i in index.tolist()])


@FUNCTIONS.register_module()
def batch_collate(data: Union[dict, List[dict]]) -> dict:
    """Collate function of :class:`InMemoryBatchDataset`: a batch that the
    dataset already assembled passes through; a list of single samples is
    stacked like ``default_collate`` (images) and listed (data samples)."""
    if isinstance(data, dict):
        return data
    if not data:
        raise ValueError('batch_collate got an empty batch')
    return dict(
        inputs=torch.stack([d['inputs'] for d in data]),
        data_samples=[d['data_samples'] for d in data])

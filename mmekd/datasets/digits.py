# Copyright (c) mmekd contributors. All rights reserved.
"""The demo's embedded dataset: scikit-learn's real handwritten digits."""
from typing import List

import numpy as np
from mmpretrain.datasets import BaseDataset

from mmekd.registry import DATASETS


@DATASETS.register_module()
class Digits(BaseDataset):
    """Handwritten digits shipped with scikit-learn (UCI optical digits).

    1,797 real 8x8 grey images of the digits 0-9, scanned from forms written
    by 43 people. Images are returned as ``(8, 8, 3)`` uint8 arrays (grey
    repeated over RGB, 0-16 scaled to 0-255); resize them in the pipeline.
    No download: the data is part of the scikit-learn package.

    Args:
        split (str): ``'train'`` (4 of every 5 images of each class, in file
            order) or ``'val'`` (every 5th image of each class).
        **kwargs: Other arguments of :class:`BaseDataset` (``pipeline``...).
    """
    METAINFO = {'classes': tuple(str(i) for i in range(10))}

    def __init__(self, split: str = 'train', **kwargs):
        if split not in ('train', 'val'):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.split = split
        super().__init__(ann_file='', **kwargs)

    def load_data_list(self) -> List[dict]:
        from sklearn.datasets import load_digits
        digits = load_digits()
        imgs = np.round(digits.images * (255. / 16.)).astype(np.uint8)
        imgs = np.repeat(imgs[..., None], 3, axis=-1)
        labels = digits.target.astype(np.int64)
        data_list = []
        for c in range(10):
            idx = np.flatnonzero(labels == c)
            is_val = (np.arange(len(idx)) % 5) == 4
            chosen = idx[is_val] if self.split == 'val' else idx[~is_val]
            data_list += [
                dict(img=imgs[i], gt_label=int(labels[i])) for i in chosen
            ]
        return data_list

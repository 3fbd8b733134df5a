# Copyright (c) mmekd contributors. All rights reserved.
import mmpretrain.datasets  # noqa: F401  (register MMPretrain transforms)

from .cifar import CIFAR10, CIFAR100, load_cifar_batch
from .digits import Digits
from .in_memory import InMemoryBatchDataset, batch_collate

__all__ = [
    'CIFAR10', 'CIFAR100', 'Digits', 'InMemoryBatchDataset', 'batch_collate',
    'load_cifar_batch'
]

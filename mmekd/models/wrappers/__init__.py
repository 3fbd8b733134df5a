# Copyright (c) mmekd contributors. All rights reserved.
from .ddnn_distributed import DDNNDistributedDataParallel

__all__ = ['DDNNDistributedDataParallel']

# Copyright (c) mmekd contributors. All rights reserved.
from .depth_dynamic_resnet import (DepthDynamicResNet, DepthDynamicResNetCIFAR,
                                   PrivateBatchNorm2d, PrivateStatsBatchNorm2d,
                                   select_blocks)
from .slim_resnet import SlimResNet, SlimResNetCIFAR

__all__ = [
    'DepthDynamicResNet', 'DepthDynamicResNetCIFAR', 'PrivateBatchNorm2d',
    'PrivateStatsBatchNorm2d', 'select_blocks', 'SlimResNet', 'SlimResNetCIFAR'
]

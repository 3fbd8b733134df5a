# Copyright (c) mmekd contributors. All rights reserved.
from .depth_dynamic_resnet import (DepthDynamicResNet, DepthDynamicResNetCIFAR,
                                   dynamic_only_args)
from .net_tree import NetTree, TreeNode, select_blocks
from .per_net_norm import (PrivateBatchNorm2d, PrivateStatsBatchNorm2d,
                           per_net_norms, use_net)

__all__ = [
    'DepthDynamicResNet', 'DepthDynamicResNetCIFAR', 'dynamic_only_args',
    'NetTree', 'TreeNode', 'select_blocks', 'PrivateBatchNorm2d',
    'PrivateStatsBatchNorm2d', 'per_net_norms', 'use_net'
]

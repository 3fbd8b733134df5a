# Copyright (c) mmekd contributors. All rights reserved.
from .depth_dynamic import DepthDynamicMixin, PerNetDropPath
from .depth_dynamic_convnext import DepthDynamicConvNeXt
from .depth_dynamic_resnet import (DepthDynamicResNet, DepthDynamicResNetCIFAR,
                                   dynamic_only_args)
from .depth_dynamic_swin import DepthDynamicSwinTransformer
from .depth_dynamic_vit import DepthDynamicVisionTransformer
from .net_tree import NetTree, TreeNode, select_blocks
from .per_net_norm import (PrivateBatchNorm2d, PrivateStatsBatchNorm2d,
                           per_net_norms, use_net)

__all__ = [
    'DepthDynamicMixin', 'PerNetDropPath', 'DepthDynamicConvNeXt',
    'DepthDynamicResNet', 'DepthDynamicResNetCIFAR', 'dynamic_only_args',
    'DepthDynamicSwinTransformer', 'DepthDynamicVisionTransformer',
    'NetTree', 'TreeNode', 'select_blocks', 'PrivateBatchNorm2d',
    'PrivateStatsBatchNorm2d', 'per_net_norms', 'use_net'
]

# Copyright (c) mmekd contributors. All rights reserved.
from .fused_constructor import FusedOptimWrapperConstructor
from .safe_optim_wrapper import NonFiniteLossError, SafeOptimWrapper

__all__ = [
    'FusedOptimWrapperConstructor', 'NonFiniteLossError', 'SafeOptimWrapper'
]

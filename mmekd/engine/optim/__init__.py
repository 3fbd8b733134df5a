# Copyright (c) mmekd contributors. All rights reserved.
from .buffer_snapshot import BufferSnapshot
from .fused_constructor import FusedOptimWrapperConstructor
from .safe_optim_wrapper import (NonFiniteLossError, NonFiniteReporter,
                                 SafeAmpOptimWrapper, SafeOptimWrapper,
                                 SafeOptimWrapperMixin)

__all__ = [
    'BufferSnapshot', 'FusedOptimWrapperConstructor', 'NonFiniteLossError',
    'NonFiniteReporter', 'SafeAmpOptimWrapper', 'SafeOptimWrapper',
    'SafeOptimWrapperMixin'
]

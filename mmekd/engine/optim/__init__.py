# Copyright (c) mmekd contributors. All rights reserved.
from .safe_optim_wrapper import NonFiniteLossError, SafeOptimWrapper

__all__ = ['NonFiniteLossError', 'SafeOptimWrapper']

# Copyright (c) mmekd contributors. All rights reserved.
from .multi_net_accuracy import MultiNetAccuracy

__all__ = ['MultiNetAccuracy']

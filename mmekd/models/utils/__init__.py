# Copyright (c) mmekd contributors. All rights reserved.
from .net_names import FULL_NET, sub_net_name

__all__ = ['FULL_NET', 'sub_net_name']

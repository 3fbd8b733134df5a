# Copyright (c) mmekd contributors. All rights reserved.
from .multi_net_cls_head import MultiNetClsHead

__all__ = ['MultiNetClsHead']

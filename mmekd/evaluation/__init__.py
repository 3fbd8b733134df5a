# Copyright (c) mmekd contributors. All rights reserved.
from .metrics import *  # noqa: F401,F403
from .net_table import format_net_table, per_net_metrics

__all__ = ['format_net_table', 'per_net_metrics']

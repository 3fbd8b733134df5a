# Copyright (c) mmekd contributors. All rights reserved.
from .console import SetupToLogFileFilter, SetupToLogFileRunner

__all__ = ['SetupToLogFileFilter', 'SetupToLogFileRunner']

# Copyright (c) mmekd contributors. All rights reserved.
from .ddnn_classifier import DDNNClassifier

__all__ = ['DDNNClassifier']

# Copyright (c) mmekd contributors. All rights reserved.
"""Imported first by ``mmekd/__init__.py``: warnings filters that must be in
place before mmpretrain (and mmcv) are imported.

mmcv-lite ships no compiled ops, so importing ``mmcv.cnn`` (which mmpretrain
does) warns that ``MultiScaleDeformableAttention``, a detection op that no
mmekd model uses, is missing. Only that message is silenced.
"""
import warnings

warnings.filterwarnings(
    'ignore',
    message='Fail to import ``MultiScaleDeformableAttention``',
    category=UserWarning)

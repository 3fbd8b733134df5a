# Copyright (c) mmekd contributors. All rights reserved.
"""FLOPs and parameters of a classifier, by MMPretrain's convention.

Example::

    >>> complexity(model, (3, 224, 224))
    {'flops': 1819066368, 'params': 11689512}
"""
import contextlib
import copy
import logging
from typing import Dict, Tuple

import torch.nn as nn
from mmengine.analysis import get_model_complexity_info
from mmengine.logging import MMLogger


def complexity(model: nn.Module, shape: Tuple[int, int, int]) -> Dict:
    """FLOPs of ``extract_feat`` (backbone + neck, MMPretrain's convention
    in ``tools/analysis_tools/get_flops.py`` and its metafiles) and
    parameters of the whole classifier, for one image of ``shape``."""
    model = copy.deepcopy(model).eval()
    model.forward = model.extract_feat
    # The head is not called by extract_feat: expected, not worth a warning.
    with quiet_flop_counter():
        info = get_model_complexity_info(
            model, shape, show_table=False, show_arch=False)
    return dict(flops=int(info['flops']), params=int(info['params']))


@contextlib.contextmanager
def quiet_flop_counter():
    """Keep the warnings of MMEngine's FLOP counter off the current logger:
    it lists every op it does not count (``aten::add_`` of the residual
    additions, which its convention does not count as FLOPs) and every
    module not called, on each count."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)

# Copyright (c) mmekd contributors. All rights reserved.
"""Knowledge Evolution's model side: the split into a fit and a reset
hypothesis (:mod:`.split`), and the fit hypothesis as a physically slim
network (:mod:`.slim_extraction`, :mod:`.slim_resnet`). The training loop
side is :class:`mmekd.KnowledgeEvolutionHook`."""
from .slim_extraction import check_slim_support, extract_slim, slim_model_cfg
from .slim_resnet import SlimResNet, SlimResNetCIFAR
from .split import (SPLIT_MODES, KESplit, check_ke_support, check_split_rate,
                    check_weight_init, keep_count, reset_hypothesis_,
                    split_layers)

__all__ = [
    'KESplit', 'SPLIT_MODES', 'check_ke_support', 'check_split_rate', 'check_weight_init',
    'keep_count', 'reset_hypothesis_', 'split_layers', 'check_slim_support',
    'extract_slim', 'slim_model_cfg', 'SlimResNet', 'SlimResNetCIFAR'
]

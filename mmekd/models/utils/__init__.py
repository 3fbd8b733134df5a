# Copyright (c) mmekd contributors. All rights reserved.
from .bn_recalibration import recalibrate_bn
from .ke_split import (KESplit, check_split_rate, keep_count,
                       reset_hypothesis_, split_layers)
from .net_names import (FULL_NET, UnknownNetError, check_net_name,
                        sub_net_name)
from .slim_extraction import check_slim_support, extract_slim, slim_model_cfg

__all__ = [
    'FULL_NET', 'sub_net_name', 'UnknownNetError', 'check_net_name',
    'KESplit', 'check_split_rate', 'keep_count',
    'reset_hypothesis_', 'split_layers', 'check_slim_support',
    'extract_slim', 'slim_model_cfg', 'recalibrate_bn'
]
from .gpu_augment import (  # noqa: E402
    GPUAugmentPreprocessor, random_pad_crop_flip)

__all__ += ['GPUAugmentPreprocessor', 'random_pad_crop_flip']

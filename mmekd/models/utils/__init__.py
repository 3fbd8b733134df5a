# Copyright (c) mmekd contributors. All rights reserved.
from .bn_recalibration import recalibrate_bn
from .gpu_augment import GPUAugmentPreprocessor, random_pad_crop_flip

__all__ = ['recalibrate_bn', 'GPUAugmentPreprocessor', 'random_pad_crop_flip']

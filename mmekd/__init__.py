# Copyright (c) mmekd contributors. All rights reserved.
"""mmekd: depth-level dynamic networks with Embedded Knowledge Distillation
and Knowledge Evolution for MMPretrain.

``import mmekd`` applies the changes listed in :mod:`mmekd.patches` (safe
checkpoint loading, ``mmpretrain::`` config bases, ...); the components
register when a config names them (``type='mmekd.<Name>'``) or when their
package is imported. ``mmekd.apis`` loads when first used.
"""
import importlib

from . import patches

patches.install()  # before MMPretrain and mmcv are imported

import mmengine  # noqa: E402
import mmpretrain  # noqa: E402
from mmengine.utils import digit_version  # noqa: E402

from .version import __version__, version_info  # noqa: E402

_mmengine_version = digit_version(mmengine.__version__)
assert digit_version('0.10.0') <= _mmengine_version < digit_version('1.0.0'), (
    f'mmengine=={mmengine.__version__} is incompatible with mmekd; install '
    'mmengine>=0.10.0,<1.0.0')
_mmpretrain_version = digit_version(mmpretrain.__version__)
assert digit_version('1.2.0') <= _mmpretrain_version < digit_version(
    '1.3.0'), (f'mmpretrain=={mmpretrain.__version__} is incompatible with '
               'mmekd; install mmpretrain>=1.2.0,<1.3.0')

__all__ = ['__version__', 'version_info', 'apis']


def __getattr__(name: str):
    """``mmekd.apis`` (the deployment layer) is imported on first use."""
    if name == 'apis':
        return importlib.import_module('mmekd.apis')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

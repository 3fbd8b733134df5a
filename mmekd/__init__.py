# Copyright (c) mmekd contributors. All rights reserved.
"""mmekd: depth-level dynamic networks with Embedded Knowledge Distillation
and Knowledge Evolution for MMPretrain."""
from . import _import_warnings  # noqa: F401  (before mmpretrain/mmcv)

import mmengine  # noqa: I001
import mmpretrain
from mmengine.utils import digit_version

from .utils import (register_dynamo_safe_version_checks,
                    register_package_lookup, register_safe_checkpoint_loader)
from .version import __version__, version_info

_mmengine_version = digit_version(mmengine.__version__)
assert digit_version('0.10.0') <= _mmengine_version < digit_version('1.0.0'), (
    f'mmengine=={mmengine.__version__} is incompatible with mmekd; install '
    'mmengine>=0.10.0,<1.0.0')
_mmpretrain_version = digit_version(mmpretrain.__version__)
assert digit_version('1.2.0') <= _mmpretrain_version < digit_version(
    '1.3.0'), (f'mmpretrain=={mmpretrain.__version__} is incompatible with '
               'mmekd; install mmpretrain>=1.2.0,<1.3.0')

# setuptools >= 82 has no pkg_resources: let mmengine 0.10 resolve
# ``_base_ = ['mmpretrain::...']`` through importlib.
register_package_lookup()
# torch >= 2.6 + mmengine 0.10: load mmengine checkpoints safely.
register_safe_checkpoint_loader()
# torch.compile (torch 2.11 + packaging >= 26): keep Dynamo out of mmengine's
# ``digit_version`` calls in autocast / AmpOptimWrapper / model forward.
register_dynamo_safe_version_checks()

# Last: the APIs build mmekd models, so the checks above come first. Makes
# ``import mmekd; mmekd.apis.register_model_zoo()`` work.
from . import apis  # noqa: E402

__all__ = ['__version__', 'version_info', 'apis']

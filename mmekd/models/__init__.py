# Copyright (c) mmekd contributors. All rights reserved.
# MMPretrain's models must be registered before ours resolve types through
# the parent registry (a parent's lazy ``locations`` are not imported then).
import mmpretrain.models  # noqa: F401

from .backbones import *  # noqa: F401,F403
from .classifiers import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .ke import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .utils import *  # noqa: F401,F403
from .wrappers import *  # noqa: F401,F403

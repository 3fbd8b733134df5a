# Copyright (c) mmekd contributors. All rights reserved.
from .checkpoint import (UnsafeCheckpointError, allowed_globals,
                         register_safe_checkpoint_loader, safe_load)
from .run_config import apply_dataloader_defaults, enable_amp

__all__ = [
    'UnsafeCheckpointError', 'allowed_globals', 'safe_load',
    'register_safe_checkpoint_loader', 'apply_dataloader_defaults',
    'enable_amp'
]

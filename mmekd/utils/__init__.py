# Copyright (c) mmekd contributors. All rights reserved.
from .checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,
                         allowed_globals, register_safe_checkpoint_loader,
                         safe_load)
from .compat import (is_dynamo_safe_version_fn,
                     register_dynamo_safe_version_checks)
from .package_lookup import (is_package_lookup_registered,
                             register_package_lookup)
from .refusal import RefusalError
from .run_config import (apply_dataloader_defaults, check_amp_device,
                         enable_amp)

__all__ = [
    'RefusalError', 'CorruptCheckpointError', 'UnsafeCheckpointError',
    'allowed_globals', 'safe_load',
    'register_safe_checkpoint_loader', 'apply_dataloader_defaults',
    'enable_amp', 'check_amp_device', 'register_dynamo_safe_version_checks',
    'is_dynamo_safe_version_fn', 'register_package_lookup',
    'is_package_lookup_registered'
]
from .atomic_save import (OutputIsInputError, atomic_output,  # noqa: E402
                          atomic_write, check_outputs_not_inputs,
                          fsync_and_replace)
from .checkpoint_keys import (CheckpointMismatchError,  # noqa: E402
                              allow_partial_load, check_loadable)
from .finite import NonFiniteStateError, check_finite  # noqa: E402
from .dist import setup_cpu_distributed  # noqa: E402
from .safe_defaults import (apply_safe_training_defaults,  # noqa: E402
                            check_checkpoint_hook)

__all__ += [
    'atomic_write', 'atomic_output', 'check_outputs_not_inputs',
    'OutputIsInputError', 'fsync_and_replace', 'CheckpointMismatchError',
    'allow_partial_load', 'NonFiniteStateError', 'check_finite',
    'check_loadable', 'setup_cpu_distributed',
    'apply_safe_training_defaults', 'check_checkpoint_hook'
]

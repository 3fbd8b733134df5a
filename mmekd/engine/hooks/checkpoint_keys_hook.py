# Copyright (c) mmekd contributors. All rights reserved.
"""Refuse a checkpoint that does not fit the model."""
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmekd.registry import HOOKS
from mmekd.utils.checkpoint_keys import (CheckpointMismatchError,
                                         check_loadable)
from mmekd.utils.literal_config import describe_stored_config
from mmekd.vocabulary import unwrap_model


@HOOKS.register_module()
class CheckpointKeysHook(Hook):
    """Check a loaded checkpoint's keys and shapes against the model.

    Runs in ``after_load_checkpoint``, i.e. after hooks of higher priority
    (e.g. ``EMAHook``, which swaps in the EMA weights) have edited the
    checkpoint and before the weights are copied into the model. A missing
    or differently shaped tensor raises
    :class:`mmekd.utils.CheckpointMismatchError` listing the keys and naming
    the config stored in the checkpoint (read as data); keys the
    model does not have are logged (or raise, with
    ``allow_unexpected=False``). ``tools/test.py`` registers it.

    Args:
        allow_unexpected (bool): Defaults to True.
    """

    priority = 'LOW'

    def __init__(self, allow_unexpected: bool = True) -> None:
        self.allow_unexpected = allow_unexpected

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = unwrap_model(runner.model)
        state_dict = checkpoint.get('state_dict', checkpoint)
        try:
            unexpected = check_loadable(
                model,
                state_dict,
                source=f'checkpoint {runner._load_from}',
                allow_unexpected=self.allow_unexpected)
        except CheckpointMismatchError as e:
            stored = describe_stored_config(checkpoint.get('meta') or {})
            raise CheckpointMismatchError(
                f'{e}\n{stored}' if stored else str(e)) from None
        if unexpected:
            print_log(
                f'{len(unexpected)} tensors of the checkpoint are not in '
                f'the model and are ignored: {unexpected[:10]}',
                logger='current',
                level=30)

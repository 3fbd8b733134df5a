# Copyright (c) mmekd contributors. All rights reserved.
"""Compare a checkpoint's state dict with a model before loading it."""
import re
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

# Keys whose absence changes nothing in eval mode: BN's update counter is
# only used with momentum=None during training.
_OPTIONAL_SUFFIXES = ('num_batches_tracked', )
# Per-net BatchNorm statistics (``private_norm='stats'``). A checkpoint
# trained with shared statistics lacks them; loading starts them from the
# shared ones (see PrivateStatsBatchNorm2d), which is what that checkpoint
# was tested with: reported, not refused.
# (Only statistics live under ``sub_stats``.)
PRIVATE_STATS_KEY = re.compile(r'\.sub_stats\.')


def split_private_stats(missing: List[str]) -> Tuple[List[str], List[str]]:
    """Split missing keys into ``(others, per-net BatchNorm statistics)``."""
    stats = [k for k in missing if PRIVATE_STATS_KEY.search(k)]
    return [k for k in missing if not PRIVATE_STATS_KEY.search(k)], stats


def warn_shared_stats(stats: List[str], source: str) -> None:
    """Log that ``source`` has no per-net statistics for ``stats`` keys."""
    if not stats:
        return
    from mmengine.logging import print_log
    print_log(
        f'{source} has no per-net BatchNorm statistics ({len(stats)} '
        f'tensors, e.g. {stats[0]}): it was trained with statistics shared '
        'by all nets, and every net is tested with those. Re-estimate a '
        "net's own with tools/test.py --net NET --recalibrate-bn N.",
        logger='current',
        level=30)


class CheckpointMismatchError(ValueError):
    """The checkpoint's weights do not fit the model."""


def _revise(keys, revise_keys: Sequence[Tuple[str, str]]):
    out = {}
    for key, value in keys.items():
        for pattern, repl in revise_keys:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def _listing(title: str, items: List[str], limit: int) -> str:
    shown = items[:limit]
    more = f'\n    ... and {len(items) - limit} more' \
        if len(items) > limit else ''
    return f'  {title} ({len(items)}):\n    ' + '\n    '.join(shown) + more


def check_state_dict(model: nn.Module,
                     state_dict: Dict[str, torch.Tensor],
                     source: str = 'the checkpoint',
                     revise_keys: Sequence[Tuple[str, str]] = (
                         (r'^module\.', ''), ),
                     allow_unexpected: bool = True,
                     limit: int = 10) -> List[str]:
    """Check that ``state_dict`` provides every tensor of ``model``.

    MMEngine loads with ``strict=False`` and only logs a warning for missing
    keys, so a checkpoint of another model silently leaves most weights at
    their random initialisation. This raises instead.

    Args:
        model (nn.Module): The (unwrapped) model.
        state_dict (dict): The checkpoint's ``state_dict``.
        source (str): Name of the checkpoint, for the message.
        revise_keys: ``(pattern, replacement)`` applied to the checkpoint's
            keys first, as MMEngine does (strips DDP's ``module.``).
        allow_unexpected (bool): Extra keys in the checkpoint are reported
            only. Defaults to True.
        limit (int): Keys listed per category in the message.

    Returns:
        list[str]: Unexpected keys (when allowed).

    Raises:
        CheckpointMismatchError: Keys of the model missing from the
            checkpoint, tensors of another shape, or (unless allowed)
            unexpected keys; the message lists them.
    """
    ckpt = _revise(state_dict, revise_keys)
    own = model.state_dict()
    missing, shared_stats = split_private_stats([
        k for k in own
        if k not in ckpt and not k.endswith(_OPTIONAL_SUFFIXES)
    ])
    unexpected = [k for k in ckpt if k not in own]
    mismatched = [
        f'{k}: checkpoint {tuple(ckpt[k].shape)}, model '
        f'{tuple(own[k].shape)}' for k in own
        if k in ckpt and hasattr(ckpt[k], 'shape')
        and tuple(ckpt[k].shape) != tuple(own[k].shape)
    ]
    if missing or mismatched or (unexpected and not allow_unexpected):
        loaded = sum(k in ckpt for k in own) - len(mismatched)
        parts = [
            f'{source} does not fit {type(model).__name__}: '
            f'{loaded} of the model\'s '
            f'{len(own)} tensors would be loaded. Is it a checkpoint of '
            'another config?'
        ]
        if missing:
            parts.append(_listing('missing in the checkpoint', missing,
                                  limit))
        if mismatched:
            parts.append(_listing('shape mismatch', mismatched, limit))
        if unexpected:
            parts.append(_listing('not in the model', unexpected, limit))
        raise CheckpointMismatchError('\n'.join(parts))
    warn_shared_stats(shared_stats, source)
    return unexpected

# Copyright (c) mmekd contributors. All rights reserved.
"""Compare a checkpoint's state dict with a model before loading it."""
import os
import re
from contextlib import contextmanager
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from mmekd.vocabulary import is_per_net_stats_key, unwrap_model
from .finite import check_finite

from .refusal import RefusalError

# Keys whose absence changes nothing in eval mode: BN's update counter is
# only used with momentum=None during training.
_OPTIONAL_SUFFIXES = ('num_batches_tracked', )


def split_private_stats(missing: List[str]) -> Tuple[List[str], List[str]]:
    """Split missing keys into ``(others, per-net BatchNorm statistics)``.

    A checkpoint trained with shared statistics lacks the per-net ones
    (``private_norm='stats'``); loading starts them from the shared ones
    (see PrivateStatsBatchNorm2d), which is what that checkpoint was tested
    with: reported, not refused."""
    stats = [k for k in missing if is_per_net_stats_key(k)]
    return [k for k in missing if not is_per_net_stats_key(k)], stats


def warn_shared_stats(stats: List[str], source: str) -> None:
    """Log that ``source`` has no per-net statistics for ``stats`` keys."""
    if not stats:
        return
    print_log(
        f'{source} has no per-net BatchNorm statistics ({len(stats)} '
        f'tensors, e.g. {stats[0]}): it was trained with statistics shared '
        'by all nets, and every net is tested with those. Re-estimate a '
        "net's own with tools/test.py --net NET --recalibrate-bn N.",
        logger='current',
        level=30)


class CheckpointMismatchError(RefusalError, ValueError):
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


def compare_state_dict(
    model: nn.Module,
    state_dict: Dict[str, torch.Tensor],
    revise_keys: Sequence[Tuple[str, str]] = ((r'^module\.', ''), )
) -> Tuple[List[str], List[str], List[str], List[Tuple[str, tuple, tuple]]]:
    """How ``state_dict`` differs from ``model``'s: the one comparison
    behind every checkpoint check (``tools/test.py``, export, resume).

    ``revise_keys`` are applied to the checkpoint's keys first (DDP's
    ``module.``), and a missing BatchNorm ``num_batches_tracked`` does not
    count (it only matters with ``momentum=None`` during training).

    Returns:
        tuple: ``(missing, missing per-net statistics, unexpected,
        [(key, checkpoint shape, model shape)])``.
    """
    ckpt = _revise(state_dict, revise_keys)
    own = model.state_dict()
    missing, shared_stats = split_private_stats([
        k for k in own
        if k not in ckpt and not k.endswith(_OPTIONAL_SUFFIXES)
    ])
    unexpected = [k for k in ckpt if k not in own]
    shapes = [(k, tuple(ckpt[k].shape), tuple(own[k].shape)) for k in own
              if k in ckpt and hasattr(ckpt[k], 'shape')
              and tuple(ckpt[k].shape) != tuple(own[k].shape)]
    return missing, shared_stats, unexpected, shapes


def check_loadable(model: nn.Module,
                     state_dict: Dict[str, torch.Tensor],
                     source: str = 'the checkpoint',
                     revise_keys: Sequence[Tuple[str, str]] = (
                         (r'^module\.', ''), ),
                     allow_unexpected: bool = True,
                     limit: int = 10) -> List[str]:
    """Check that ``state_dict`` provides every tensor of ``model`` (the load
    check of ``tools/test.py`` and resume; export's stricter check is
    :func:`mmekd.apis.check_exact`).

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
    missing, shared_stats, unexpected, shapes = compare_state_dict(
        model, state_dict, revise_keys)
    mismatched = [f'{k}: checkpoint {c}, model {m}' for k, c, m in shapes]
    own = model.state_dict()
    ckpt = _revise(state_dict, revise_keys)
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


# ---------------------------------------------------------------------- #
# every load into a model (load_from, init_cfg=Pretrained, get_model)
# ---------------------------------------------------------------------- #
PARTIAL_LOAD_ENV = 'MMEKD_ALLOW_PARTIAL_LOAD'
MIN_MATCHED_FRACTION = 0.5
MAX_RESHAPED = 8
_partial_load = [False]


@contextmanager
def allow_partial_load():
    """Within this context, a checkpoint that fits less than half of a
    model's values still loads (with MMEngine's warning). Setting the
    environment variable ``MMEKD_ALLOW_PARTIAL_LOAD=1`` does the same for a
    whole run (e.g. ``MMEKD_ALLOW_PARTIAL_LOAD=1 python tools/train.py
    ...``)."""
    before = _partial_load[0]
    _partial_load[0] = True
    try:
        yield
    finally:
        _partial_load[0] = before


def _prefixes(keys, depth: int = 2, limit: int = 8) -> str:
    found = []
    for k in keys:
        p = '.'.join(k.split('.')[:depth])
        if p not in found:
            found.append(p)
    return ', '.join(found[:limit]) + (', ...' if len(found) > limit else '')


def check_fit(module: nn.Module, state_dict: Dict[str, torch.Tensor],
              source: str = 'the checkpoint') -> None:
    """Raise :class:`CheckpointMismatchError` when the tensors of
    ``state_dict`` with the name and shape of one of ``module``'s cover
    less than half of the module's values, or when more than 8 (and 5 %)
    of its tensors have another shape there, unless
    partial loads are allowed (:func:`allow_partial_load`); raise
    :class:`mmekd.utils.finite.NonFiniteStateError` when a tensor that
    would be loaded holds NaN or infinite values."""
    module = unwrap_model(module)
    own = module.state_dict()
    matched = [
        k for k in own if k in state_dict and isinstance(
            state_dict[k], torch.Tensor)
        and tuple(state_dict[k].shape) == tuple(own[k].shape)
    ]
    allowed = _partial_load[0] or os.environ.get(PARTIAL_LOAD_ENV) == '1'
    # Weighted by size: a checkpoint of another depth still fits many
    # BatchNorm vectors by shape, but none of the convolutions.
    total = sum(v.numel() for v in own.values())
    fitting = sum(own[k].numel() for k in matched)
    # A new classifier (other num_classes) changes a few shapes; another
    # architecture changes many (ResNet-50 in ResNet-34: 31 of 263).
    reshaped = [
        k for k in own if k in state_dict and isinstance(
            state_dict[k], torch.Tensor)
        and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    too_little = total and fitting < MIN_MATCHED_FRACTION * total
    too_many = len(reshaped) > max(MAX_RESHAPED, 0.05 * len(own))
    if (too_little or too_many) and not allowed:
        raise CheckpointMismatchError(
            f'{source} does not fit {type(module).__name__}: '
            f'{len(matched)} of the model\'s {len(own)} tensors '
            f'({100 * fitting / total:.1f} % of its values) have a tensor '
            f'of the same name and shape in it ({len(state_dict)} tensors; '
            f'{len(reshaped)} of the same name have another shape'
            f'{", e.g. " + reshaped[0] if reshaped else ""}). The model '
            f'expects keys like {_prefixes(own)}; the checkpoint has '
            f'{_prefixes(state_dict)}. Is it a checkpoint of another '
            'architecture? For an intended partial load set '
            f'{PARTIAL_LOAD_ENV}=1 (or use mmekd.utils.allow_partial_load()).')
    check_finite(
        {k: state_dict[k]
         for k in matched}, source.capitalize() if source[:1].islower()
        else source, advice='It was saved after training diverged: use an '
        'earlier checkpoint.')

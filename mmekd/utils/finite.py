# Copyright (c) mmekd contributors. All rights reserved.
"""Find NaN / infinite tensors in a model state or a checkpoint."""
from typing import Dict, List

import torch

from .refusal import RefusalError


class NonFiniteStateError(RefusalError, FloatingPointError):
    """A model state or checkpoint holds NaN or infinite values."""


def nonfinite_tensors(state_dict: Dict[str, torch.Tensor]) -> List[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold a NaN
    or an infinity, in order (one reduction per tensor, one host read)."""
    names, flags = [], []
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and (
                value.is_floating_point() or value.is_complex()):
            names.append(name)
            flags.append(~torch.isfinite(value.detach()).all())
    if not names:
        return []
    bad = torch.stack([f.cpu() for f in flags]).tolist()
    return [n for n, b in zip(names, bad) if b]


def check_finite(state_dict: Dict[str, torch.Tensor], source: str,
                 advice: str = '', limit: int = 10) -> None:
    """Raise :class:`NonFiniteStateError` naming the non-finite tensors of
    ``state_dict`` (``source`` says whose state it is)."""
    bad = nonfinite_tensors(state_dict)
    if not bad:
        return
    shown = ', '.join(bad[:limit]) + (
        f', ... ({len(bad) - limit} more)' if len(bad) > limit else '')
    raise NonFiniteStateError(
        f'{source} has NaN or infinite values in {len(bad)} of '
        f'{len(state_dict)} tensors: {shown}.' + (f' {advice}'
                                                 if advice else ''))

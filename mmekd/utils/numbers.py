# Copyright (c) mmekd contributors. All rights reserved.
"""Build-time checks of numeric config fields."""
import math


def config_number(value, field: str, positive: bool = False) -> float:
    """``float(value)`` for a config field that must be a real number.

    Refuses what ``float()`` would quietly accept or turn into nonsense: a
    string (``loss_weight='1'``), a bool, NaN or infinity, and (with
    ``positive``) values <= 0; negative values are refused too, since a
    negative weight or temperature turns a loss into its opposite.

    Raises:
        TypeError: ``value`` is not an int or float.
        ValueError: It is not finite, negative, or not > 0 with
            ``positive``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{field} must be a number, got {value!r} '
                        f'({type(value).__name__})')
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = '> 0' if positive else '>= 0'
        raise ValueError(f'{field} must be {need} (a finite number), got '
                         f'{value!r}')
    return value

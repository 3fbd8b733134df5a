# Copyright (c) mmekd contributors. All rights reserved.
"""The one check of numeric config fields, with one message style:
``'<field> must be <requirement>, got <value>'``.

Example::

    >>> config_number(0.5, 'head.loss.loss_weight')
    0.5
    >>> config_int(0, 'max_pending', minimum=1)
    ValueError: max_pending must be a positive int, got 0
"""
import math
from typing import Optional


def config_number(value,
                  field: str,
                  positive: bool = False,
                  maximum: Optional[float] = None) -> float:
    """``float(value)`` for a config field that must be a finite real number
    ``>= 0`` (``> 0`` with ``positive``), at most ``maximum`` if given.

    Refuses what ``float()`` would quietly accept or turn into nonsense: a
    string (``loss_weight='1'``), a bool, NaN or infinity, and negative
    values (a negative weight or temperature turns a loss into its
    opposite).

    Raises:
        TypeError: ``value`` is not an int or float.
        ValueError: It is not finite, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{field} must be a number, got {value!r} '
                        f'({type(value).__name__})')
    number = float(value)
    if (not math.isfinite(number) or number < 0 or (positive and number == 0)
            or (maximum is not None and number > maximum)):
        if maximum is not None:
            need = f"in {'(' if positive else '['}0, {maximum}]"
        else:
            need = '> 0' if positive else '>= 0'
        raise ValueError(f'{field} must be a finite number {need}, got '
                         f'{value!r}')
    return number


def config_int(value,
               field: str,
               minimum: int = 0,
               maximum: Optional[int] = None,
               allow_none: bool = False,
               note: str = '') -> Optional[int]:
    """``value`` for a config field that must be an int in
    ``[minimum, maximum]`` (or None with ``allow_none``).

    Args:
        note (str): Said after the requirement, e.g. ``"(the head's
            num_classes)"``.

    Raises:
        ValueError: ``value`` is not such an int (a bool is not an int).
    """
    if value is None and allow_none:
        return None
    ok = (not isinstance(value, bool) and isinstance(value, int)
          and value >= minimum and (maximum is None or value <= maximum))
    if not ok:
        if maximum is not None:
            need = f'an int in [{minimum}, {maximum}]'
        elif minimum == 1:
            need = 'a positive int'
        else:
            need = f'an int >= {minimum}'
        need = ('None or ' if allow_none else '') + need
        raise ValueError(f'{field} must be {need}'
                         f'{" " + note if note else ""}, got {value!r}')
    return value

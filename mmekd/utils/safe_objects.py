# Copyright (c) mmekd contributors. All rights reserved.
"""The non-tensor objects a checkpoint may hold, rebuilt as data.

MMEngine checkpoints carry numpy arrays and scalars and mmengine
``HistoryBuffer`` objects (the logged history). Letting the unpickler
rebuild them with numpy's own functions is not safe: a numpy ``dtype``
whose pickled state clears the object flags, passed to
``numpy._core.multiarray.scalar`` or an array's ``__setstate__`` with a few
attacker bytes, makes numpy read those bytes as an object pointer (a
segmentation fault, or worse), and a ``HistoryBuffer``'s state may replace
its methods.

So the allow-list given to ``torch.load(weights_only=True)`` names only the
inert stand-ins of this module: unpickling records what the file says and
calls no numpy code. :func:`materialize` then walks the loaded object and
rebuilds each stand-in from validated data:

- a dtype only from its name (booleans, integers, floats, complex, fixed
  length strings; never ``object``), and only if the pickled state equals
  the state numpy itself writes for that name and byte order;
- a scalar from exactly ``itemsize`` bytes;
- an array from exactly ``prod(shape) * itemsize`` bytes (shape checked
  before anything is allocated);
- a ``HistoryBuffer`` from its data fields only (``max_length``, the
  value and count histories); its statistics methods are the class's own.

Anything else raises :class:`UnsafeCheckpointError`.
"""
import math
import pickle
import re
from typing import Any, Dict, List

import numpy as np
from mmengine.logging import HistoryBuffer

from .refusal import RefusalError


class UnsafeCheckpointError(RefusalError, pickle.UnpicklingError):
    """A checkpoint holds objects that are not on the allow-list."""


# kind + item size, as numpy pickles a dtype: b1, i1..i8, u1..u8, f2..f8,
# c8, c16, and strings U<n> / S<n>.
_DTYPE_NAME = re.compile(r'^(b1|[iu][1248]|f[248]|c(?:8|16)|[US]\d{1,6})$')
_MAX_NDIM = 32
_STAT_METHODS = ('min', 'max', 'current', 'mean')


class DtypeState:
    """Stand-in for ``numpy.dtype(name, align, copy)`` plus its state."""

    def __init__(self, name=None, align=False, copy=True):
        self.args = (name, align, copy)
        self.state = None

    def __setstate__(self, state):
        self.state = state


class NdarrayClass:
    """Stand-in for the ``numpy.ndarray`` global (only passed around)."""


class ArrayState:
    """Stand-in for ``numpy.core.multiarray._reconstruct(...)`` plus the
    array's state (``(version, shape, dtype, is_fortran, data)``)."""

    def __init__(self, cls=None, shape=None, typecode=None):
        self.cls = cls
        self.state = None

    def __setstate__(self, state):
        self.state = state


class HistoryBufferState:
    """Stand-in for an mmengine ``HistoryBuffer`` and its state dict."""

    def __setstate__(self, state):
        self.state = state


class StatMethod:
    """What ``getattr(HistoryBuffer, 'mean')`` unpickles to: a name."""

    def __init__(self, name: str):
        self.name = name


def scalar_state(dtype, data) -> Any:
    """``numpy._core.multiarray.scalar(dtype, data)``, rebuilt as data."""
    dtype = _dtype(dtype)
    if not isinstance(data, (bytes, bytearray)) or \
            len(data) != dtype.itemsize:
        raise UnsafeCheckpointError(
            f'a numpy {dtype} scalar must be stored as {dtype.itemsize} '
            f'bytes, got {type(data).__name__} of length '
            f'{len(data) if hasattr(data, "__len__") else "?"}')
    return np.frombuffer(bytes(data), dtype=dtype)[0]


def history_buffer_getattr(obj: Any, name: str) -> StatMethod:
    """The only ``getattr`` a checkpoint may call: protocol 2 writes
    ``HistoryBuffer``'s saved statistics methods as
    ``getattr(HistoryBuffer, 'mean')``."""
    if obj is HistoryBufferState and name in _STAT_METHODS:
        return StatMethod(name)
    owner = 'HistoryBuffer' if obj is HistoryBufferState else repr(obj)
    raise UnsafeCheckpointError(
        f'getattr({owner}, {name!r}) is not allowed in a checkpoint')


def empty_bytes(*args) -> bytes:
    """``bytes()``: protocol 2 pickles ``b''`` (the buffer of an empty
    numpy array) as a call to ``bytes`` without arguments."""
    if args:
        raise UnsafeCheckpointError(
            f'bytes{args!r} is not allowed in a checkpoint')
    return b''


def stand_ins() -> List[Any]:
    """``(object, 'module.name')`` pairs for ``torch.serialization``'s
    allow-list: every name a numpy / mmengine object pickles through,
    mapped to its stand-in (numpy 1.x and 2.x module names)."""
    pairs = [
        (HistoryBufferState, 'mmengine.logging.history_buffer.HistoryBuffer'),
        (history_buffer_getattr, 'builtins.getattr'),
        (empty_bytes, 'builtins.bytes'),
        (DtypeState, 'numpy.dtype'),
        (NdarrayClass, 'numpy.ndarray'),
    ]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        pairs += [(scalar_state, f'{module}.scalar'),
                  (ArrayState, f'{module}._reconstruct')]
    return pairs


def _dtype(spec: Any) -> np.dtype:
    """A clean numpy dtype for a :class:`DtypeState`, or raise."""
    if not isinstance(spec, DtypeState):
        raise UnsafeCheckpointError(
            f'expected a numpy dtype, got {type(spec).__name__}')
    name, align, copy = spec.args
    if not isinstance(name, str) or not _DTYPE_NAME.match(name):
        raise UnsafeCheckpointError(
            f'numpy dtype {name!r} is not allowed in a checkpoint (only '
            'booleans, integers, floats, complex numbers and fixed-length '
            'strings; never objects)')
    if align is not False or copy is not True:
        raise UnsafeCheckpointError(
            f'numpy dtype {name!r} with align={align!r}, copy={copy!r} is '
            'not what numpy writes')
    dtype = np.dtype(name)
    state = spec.state
    if isinstance(state, tuple) and len(state) == 8 and state[1] in '<>':
        if dtype.byteorder not in ('|', state[1]):
            dtype = dtype.newbyteorder(state[1])
    if state != dtype.__reduce__()[2]:
        raise UnsafeCheckpointError(
            f'numpy dtype {name!r} has an altered state {state!r} (numpy '
            f'writes {dtype.__reduce__()[2]!r}); refusing it')
    return dtype


def _array(spec: ArrayState) -> np.ndarray:
    if spec.cls is not NdarrayClass:
        raise UnsafeCheckpointError('only plain numpy arrays are allowed in '
                                    'a checkpoint')
    state = spec.state
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
        raise UnsafeCheckpointError(
            'a numpy array must have the state (1, shape, dtype, '
            f'is_fortran, data), got {type(state).__name__}')
    _, shape, dtype, fortran, data = state
    if not (isinstance(shape, tuple) and len(shape) <= _MAX_NDIM and all(
            type(n) is int and n >= 0 for n in shape)):
        raise UnsafeCheckpointError(
            f'a numpy array has an invalid shape {shape!r}')
    dtype = _dtype(dtype)
    if not isinstance(fortran, bool):
        raise UnsafeCheckpointError('a numpy array has an invalid '
                                    f'is_fortran flag {fortran!r}')
    size = math.prod(shape) * dtype.itemsize
    if not isinstance(data, (bytes, bytearray)) or len(data) != size:
        raise UnsafeCheckpointError(
            f'a numpy {dtype} array of shape {shape} needs {size} bytes of '
            f'data, got {type(data).__name__} of length '
            f'{len(data) if hasattr(data, "__len__") else "?"}')
    flat = np.frombuffer(bytes(data), dtype=dtype)
    return flat.reshape(shape, order='F' if fortran else 'C').copy(
        order='F' if fortran else 'C')


def _history_buffer(spec: HistoryBufferState, memo: Dict[int, Any]):
    state = getattr(spec, 'state', None)
    if not isinstance(state, dict):
        raise UnsafeCheckpointError('a HistoryBuffer must be stored with a '
                                    'state dict')
    fields = {'max_length', '_log_history', '_count_history'}
    unknown = sorted(set(state) - fields - {'statistics_methods'})
    if unknown or not fields <= set(state):
        raise UnsafeCheckpointError(
            f'a HistoryBuffer in a checkpoint may hold only {sorted(fields)} '
            f'(and its statistics_methods); got {sorted(state)}')
    methods = state.get('statistics_methods', {})
    if not isinstance(methods, dict) or any(
            not isinstance(v, StatMethod) or v.name != k
            for k, v in methods.items()):
        raise UnsafeCheckpointError(
            'the statistics_methods of a HistoryBuffer in a checkpoint may '
            f'only name its own methods {list(_STAT_METHODS)}')
    max_length = state['max_length']
    logs = materialize(state['_log_history'], memo)
    counts = materialize(state['_count_history'], memo)
    if type(max_length) is not int or max_length < 1 or not all(
            isinstance(a, np.ndarray) and a.ndim == 1
            and a.dtype.kind in 'biuf'
            for a in (logs, counts)) or len(logs) != len(counts):
        raise UnsafeCheckpointError(
            'a HistoryBuffer in a checkpoint has invalid data fields (need '
            'an int max_length >= 1 and two numeric 1-D arrays of one '
            'length)')
    buffer = HistoryBuffer(max_length=max_length)
    buffer._log_history = logs
    buffer._count_history = counts
    return buffer


def materialize(obj: Any, memo: Dict[int, Any] = None) -> Any:
    """Replace every stand-in in ``obj`` (a loaded checkpoint) by the
    validated numpy / mmengine object it stands for.

    Containers are rebuilt (lists and dicts in place, so shared references
    stay shared); tensors and plain values are returned as they are.

    Raises:
        UnsafeCheckpointError: A stand-in's data is not valid.
    """
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, DtypeState):
        out = _dtype(obj)
    elif isinstance(obj, ArrayState):
        out = _array(obj)
    elif isinstance(obj, HistoryBufferState):
        out = _history_buffer(obj, memo)
    elif isinstance(obj, (StatMethod, NdarrayClass)) or obj is NdarrayClass:
        raise UnsafeCheckpointError(
            f'a checkpoint may not hold {type(obj).__name__} on its own')
    elif isinstance(obj, dict):
        memo[key] = obj
        items = [(materialize(k, memo), materialize(v, memo))
                 for k, v in obj.items()]
        obj.clear()
        try:
            obj.update(items)
        except TypeError as e:  # e.g. an array as a key
            raise UnsafeCheckpointError(f'invalid dict key: {e}') from None
        return obj
    elif isinstance(obj, list):
        memo[key] = obj
        obj[:] = [materialize(v, memo) for v in obj]
        return obj
    elif type(obj) is tuple:
        out = tuple(materialize(v, memo) for v in obj)
    elif type(obj) in (set, frozenset):
        out = type(obj)(materialize(v, memo) for v in obj)
    else:
        return obj
    memo[key] = out
    return out


__all__ = ['UnsafeCheckpointError', 'stand_ins', 'materialize']

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
  before anything is allocated), created only as numpy writes it
  (``_reconstruct(ndarray, (0,), b'b')``: the shape given there is what
  numpy would allocate);
- a ``HistoryBuffer`` from its data fields only (``max_length``, the
  value and count histories); its statistics methods are the class's own.

A tensor (rebuilt by torch) must cover its elements without overlap and
lie inside its storage: a stride of 0 would present any number of
elements over a few bytes.

The same stand-ins read the numpy arrays of plain pickles (the CIFAR
batches, :func:`array_pickle_stand_ins`), where Python 3 writes ``bytes``
in protocol 2 as ``_codecs.encode(str, 'latin1')`` and Python 2 strings
arrive as ``str`` (read with ``encoding='latin1'``).

Anything else raises :class:`UnsafeCheckpointError`.
"""
import math
import pickle
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .refusal import RefusalError


class UnsafeCheckpointError(RefusalError, pickle.UnpicklingError):
    """A checkpoint holds objects that are not on the allow-list."""


# kind + item size, as numpy pickles a dtype: b1, i1..i8, u1..u8, f2..f8,
# c8, c16, and strings U<n> / S<n>.
_DTYPE_NAME = re.compile(r'^(b1|[iu][1248]|f[248]|c(?:8|16)|[US]\d{1,6})$')
_MAX_NDIM = 32
_NUMPY_MODULES = ('numpy.core.multiarray', 'numpy._core.multiarray')
_STAT_METHODS = ('min', 'max', 'current', 'mean')
# Values materialize() returns as they are (skipped without a call: a CIFAR
# batch holds 150,000 of them).
_PLAIN = frozenset((int, float, complex, bool, str, bytes, type(None)))


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
        self.args = (shape, typecode)
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
            f'bytes({_short(args)}) is not allowed (only bytes())')
    return b''


def latin1_bytes(*args) -> bytes:
    """``_codecs.encode(text, 'latin1')``: how Python 3 pickles a ``bytes``
    object in protocols 0 to 2. Only that exact call is allowed."""
    if len(args) == 2 and type(args[0]) is str and args[1] == 'latin1':
        try:
            return args[0].encode('latin1')
        except UnicodeEncodeError:
            pass
    raise UnsafeCheckpointError(
        f"_codecs.encode({', '.join(_short(a) for a in args)}) is not "
        "allowed: only _codecs.encode(text, 'latin1') with text of "
        'characters below 256 (how Python 3 writes bytes in protocol 2)')


def _array_pairs() -> List[Any]:
    pairs = [(empty_bytes, 'builtins.bytes'), (DtypeState, 'numpy.dtype'),
             (NdarrayClass, 'numpy.ndarray')]
    for module in _NUMPY_MODULES:
        pairs.append((ArrayState, f'{module}._reconstruct'))
    return pairs


def stand_ins() -> List[Any]:
    """``(object, 'module.name')`` pairs for ``torch.serialization``'s
    allow-list: every name a numpy / mmengine object pickles through,
    mapped to its stand-in (numpy 1.x and 2.x module names)."""
    pairs = _array_pairs() + [
        (HistoryBufferState, 'mmengine.logging.history_buffer.HistoryBuffer'),
        (history_buffer_getattr, 'builtins.getattr'),
    ]
    for module in _NUMPY_MODULES:
        pairs.append((scalar_state, f'{module}.scalar'))
    return pairs


def array_pickle_stand_ins() -> List[Any]:
    """``(object, 'module.name')`` pairs for a plain pickle of containers,
    strings and numpy arrays (Python 2 or 3, protocols 0 to 4): the names
    numpy arrays pickle through and ``_codecs.encode`` (protocol-2 bytes),
    each mapped to its stand-in. No scalars, no mmengine objects."""
    return _array_pairs() + [(latin1_bytes, '_codecs.encode')]


def _short(obj: Any, limit: int = 40) -> str:
    """``repr(obj)`` cut to ``limit`` characters (a file's strings can be
    megabytes long)."""
    text = repr(obj) if not isinstance(obj, (str, bytes, bytearray)) or len(
        obj) <= limit else f'{type(obj).__name__} of length {len(obj)}'
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _dtype(spec: Any) -> np.dtype:
    """A clean numpy dtype for a :class:`DtypeState`, or raise."""
    if not isinstance(spec, DtypeState):
        raise UnsafeCheckpointError(
            f'expected a numpy dtype, got {type(spec).__name__}')
    name, align, copy = spec.args
    if not isinstance(name, str) or not _DTYPE_NAME.match(name):
        raise UnsafeCheckpointError(
            f'numpy dtype {_short(name)} is not allowed (only booleans, '
            'integers, floats, complex numbers and fixed-length strings; '
            'never objects)')
    # numpy writes (name, False, True); older numpy wrote (name, 0, 1), as
    # in the CIFAR files of 2009.
    if not (type(align) in (bool, int) and align == 0
            and type(copy) in (bool, int) and copy == 1):
        raise UnsafeCheckpointError(
            f'numpy dtype {name!r} with align={_short(align)}, '
            f'copy={_short(copy)} is not what numpy writes')
    dtype = np.dtype(name)
    state = spec.state
    if isinstance(state, tuple) and len(state) == 8 and state[1] in '<>':
        if dtype.byteorder not in ('|', state[1]):
            dtype = dtype.newbyteorder(state[1])
    if state != dtype.__reduce__()[2]:
        raise UnsafeCheckpointError(
            f'numpy dtype {name!r} has an altered state {_short(state)} '
            f'(numpy writes {dtype.__reduce__()[2]!r}); refusing it')
    return dtype


def array_layout(spec: Any) -> Tuple[Tuple[int, ...], np.dtype]:
    """The shape and dtype a stand-in array declares, checked as
    :func:`materialize` checks them; none of its data is read and nothing
    is allocated.

    Raises:
        UnsafeCheckpointError: ``spec`` is not a stand-in numpy array, or
            declares what numpy never writes.
    """
    shape, dtype, _, _ = _array_header(spec)
    return shape, dtype


def _array_header(spec: Any) -> Tuple[tuple, np.dtype, bool, Any]:
    if not isinstance(spec, ArrayState) or spec.cls is not NdarrayClass:
        raise UnsafeCheckpointError('only plain numpy arrays are allowed')
    start, typecode = spec.args
    if not (type(start) is tuple and start == (0, )
            and typecode in (b'b', 'b')):
        # What numpy writes; the shape given here is what numpy allocates.
        raise UnsafeCheckpointError(
            f'a numpy array must be created as _reconstruct(ndarray, (0,), '
            f"b'b') (what numpy writes), not with shape {_short(start)} and "
            f'typecode {_short(typecode)}')
    state = spec.state
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
        raise UnsafeCheckpointError(
            'a numpy array must have the state (1, shape, dtype, '
            f'is_fortran, data), got {type(state).__name__}')
    _, shape, dtype, fortran, data = state
    if not (isinstance(shape, tuple) and len(shape) <= _MAX_NDIM and all(
            type(n) is int and n >= 0 for n in shape)):
        raise UnsafeCheckpointError(
            f'a numpy array has an invalid shape {_short(shape)}')
    dtype = _dtype(dtype)
    if not isinstance(fortran, bool):
        raise UnsafeCheckpointError('a numpy array has an invalid '
                                    f'is_fortran flag {_short(fortran)}')
    return shape, dtype, fortran, data


def _array(spec: ArrayState) -> np.ndarray:
    shape, dtype, fortran, data = _array_header(spec)
    size = math.prod(shape) * dtype.itemsize
    if not isinstance(data, (bytes, bytearray, str)) or len(data) != size:
        raise UnsafeCheckpointError(
            f'a numpy {dtype} array of shape {shape} needs {size} bytes of '
            f'data, got {type(data).__name__} of length '
            f'{len(data) if hasattr(data, "__len__") else "?"}')
    try:
        # A str is a Python 2 string read with encoding='latin1' (numpy's
        # own __setstate__ takes it so).
        raw = data.encode('latin1') if isinstance(data, str) else data
    except UnicodeEncodeError:
        raise UnsafeCheckpointError(
            f'the data of a numpy {dtype} array is a string with '
            'characters above 255, not bytes') from None
    # A copy: writable, and shared with nothing else from the file.
    flat = np.frombuffer(raw, dtype=dtype).copy()
    return flat.reshape(shape, order='F' if fortran else 'C')


def _history_buffer(spec: HistoryBufferState, memo: Dict[int, Any],
                    where: str):
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
    logs = materialize(state['_log_history'], memo, where)
    counts = materialize(state['_count_history'], memo, where)
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


def materialize(obj: Any,
                memo: Optional[Dict[int, Any]] = None,
                where: str = '') -> Any:
    """Replace every stand-in in ``obj`` (a loaded checkpoint) by the
    validated numpy / mmengine object it stands for, and check the layout
    of every tensor in it.

    Containers are rebuilt (lists and dicts in place, so shared references
    stay shared); tensors and plain values are returned as they are.

    Args:
        obj: What the unpickler returned.
        memo (dict, optional): Objects already rebuilt, by ``id``.
        where (str): How ``obj`` is reached (e.g. ``"['state_dict']"``), for
            messages.

    Raises:
        UnsafeCheckpointError: A stand-in's data is not valid, or a tensor's
            elements overlap or leave its storage.
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
        out = _history_buffer(obj, memo, where)
    elif isinstance(obj, (StatMethod, NdarrayClass)) or obj is NdarrayClass:
        raise UnsafeCheckpointError(
            'numpy.ndarray and getattr(HistoryBuffer, ...) may appear only '
            'inside a numpy array or a HistoryBuffer')
    elif isinstance(obj, torch.Tensor):
        _check_tensor(obj, where)
        return obj
    elif isinstance(obj, dict):
        memo[key] = obj
        items = [(k if type(k) in _PLAIN else materialize(k, memo, where),
                  v if type(v) in _PLAIN else materialize(
                      v, memo, f'{where}[{_short(k, 120)}]'))
                 for k, v in obj.items()]
        obj.clear()
        try:
            obj.update(items)
        except TypeError as e:  # e.g. an array as a key
            raise UnsafeCheckpointError(f'invalid dict key: {e}') from None
        return obj
    elif isinstance(obj, list):
        memo[key] = obj
        obj[:] = [
            v if type(v) in _PLAIN else materialize(v, memo, f'{where}[{i}]')
            for i, v in enumerate(obj)
        ]
        return obj
    elif type(obj) is tuple:
        out = tuple(
            v if type(v) in _PLAIN else materialize(v, memo, f'{where}[{i}]')
            for i, v in enumerate(obj))
    elif type(obj) in (set, frozenset):
        out = type(obj)(materialize(v, memo, where) for v in obj)
    else:
        return obj
    memo[key] = out
    return out


def _check_tensor(tensor: torch.Tensor, where: str) -> None:
    if tensor.layout != torch.strided:
        return  # sparse tensors: torch checks their invariants on load
    problem = _tensor_layout_problem(
        tuple(tensor.shape), tensor.stride(), tensor.storage_offset(),
        tensor.element_size(), tensor.untyped_storage().nbytes())
    if problem:
        raise UnsafeCheckpointError(
            f'the tensor {where + " " if where else ""}of shape '
            f'{tuple(tensor.shape)} {problem}')


def _tensor_layout_problem(shape: Sequence[int], stride: Sequence[int],
                           offset: int, itemsize: int,
                           nbytes: int) -> Optional[str]:
    """Why a strided tensor does not cover its elements without overlap
    inside a storage of ``nbytes`` bytes, or None if it does. Only the
    numbers are read: nothing of the storage is touched."""
    if math.prod(shape) == 0:
        return None
    reach = 0  # the last element (from the offset) the dims so far reach
    for step, size in sorted((st, n) for n, st in zip(shape, stride)
                             if n > 1):
        if step <= reach:
            return (f'has strides {tuple(stride)} under which its '
                    f'{math.prod(shape)} elements overlap (a stride of 0, or '
                    'one a smaller dimension already reaches); its storage '
                    f'holds {nbytes} bytes')
        reach += (size - 1) * step
    end = (offset + reach + 1) * itemsize
    if offset < 0 or end > nbytes:
        return (f'(strides {tuple(stride)}, offset {offset}) reaches byte '
                f'{end} of a storage of {nbytes} bytes')
    return None


__all__ = [
    'UnsafeCheckpointError', 'ArrayState', 'array_layout',
    'array_pickle_stand_ins', 'stand_ins', 'materialize'
]

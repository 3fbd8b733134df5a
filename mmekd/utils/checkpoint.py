# Copyright (c) mmekd contributors. All rights reserved.
"""Safe checkpoint loading for torch >= 2.6 with mmengine 0.10.x.

Torch loads with ``weights_only=True``: only tensors, containers and an
allow-list of globals are unpickled. MMEngine's own checkpoints carry a few
harmless classes (its ``HistoryBuffer`` log history, numpy arrays and
scalars), which mmengine 0.10.7 does not allow-list, so ``--resume`` and
``tools/test.py`` fail. :func:`safe_load` adds exactly those classes to the
allow-list. Anything else (a pickled function, a class that runs code when
rebuilt) is refused with :class:`UnsafeCheckpointError`; there is no fallback
to unrestricted unpickling.
"""
import os
import os.path as osp
import pickle
from typing import Any, List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds objects that are not on the allow-list."""


def _numpy_globals() -> List[Any]:
    """Numpy classes and functions an array or scalar unpickles through."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
        np.uint16, np.uint32, np.uint64, np.float16, np.float32, np.float64,
        np.complex64, np.complex128, np.str_, np.bytes_, np.object_)]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """The only ``getattr`` a checkpoint may call.

    ``HistoryBuffer.__getstate__`` saves its statistics methods, and pickle
    protocol 2 (``torch.save``'s default) writes each of them as
    ``getattr(HistoryBuffer, 'mean')``. Anything else is refused.
    """
    if obj is HistoryBuffer and name in ('min', 'max', 'current', 'mean'):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint')


def _empty_bytes(*args) -> bytes:
    """``bytes()``: protocol 2 pickles ``b''`` (the buffer of an empty numpy
    array) as a call to ``bytes`` without arguments; nothing else is
    allowed."""
    if args:
        raise pickle.UnpicklingError(
            f'bytes{args!r} is not allowed in a checkpoint')
    return b''


def allowed_globals() -> List[Any]:
    """The globals, beyond torch's defaults, a checkpoint may contain."""
    return [
        HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'),
        (_empty_bytes, 'builtins.bytes'), *_numpy_globals()
    ]


def safe_load(f, map_location=None) -> Any:
    """``torch.load`` with ``weights_only=True`` and mmengine's allow-list.

    Args:
        f: A path or a file-like object.
        map_location: As for :func:`torch.load`.

    Raises:
        UnsafeCheckpointError: The checkpoint contains something that is not
            allow-listed (e.g. a pickled callable); nothing of it is run.
    """
    name = f if isinstance(f, str) else getattr(f, 'name', repr(f))
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # Keep the line naming the refused global, not torch's generic advice.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        advice = ('(1)', '(2)', 'Check the documentation', 'Please file an')
        detail = ' '.join(
            line for line in lines[1:] if not line.startswith(advice)) or (
                lines[0] if lines else '')
        raise UnsafeCheckpointError(
            f'Refusing to load checkpoint {name}: it contains objects that '
            'are not on the allow-list of safe types (tensors, containers, '
            'numbers, numpy arrays, mmengine HistoryBuffer), so unpickling '
            'it could run arbitrary code. Only load checkpoints you trust; '
            f'torch said: {detail}') from None
    except (RuntimeError, EOFError, KeyError, ValueError) as e:
        # Zip reader errors, or a legacy/garbage stream the unpickler chokes
        # on (e.g. KeyError for a memo lookup in random bytes).
        raise RuntimeError(
            f'Cannot read checkpoint {name}: the file is truncated or not a '
            f'PyTorch checkpoint ({type(e).__name__}: '
            f'{str(e).splitlines()[0] if str(e) else ""})') from None


def _load_from_local(filename: str, map_location=None):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    return safe_load(filename, map_location=map_location)


def _load_from_http(filename: str, map_location=None, model_dir=None):
    """Download once into the torch hub cache (rank 0 first), then
    :func:`safe_load`; mmengine's ``load_url`` calls ``torch.load`` with
    torch's default, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` turns off."""
    from urllib.parse import urlparse

    import torch.distributed as torch_dist
    from mmengine.dist import get_dist_info
    from torch.hub import download_url_to_file, get_dir

    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    cached = osp.join(model_dir, osp.basename(urlparse(filename).path))
    rank, world_size = get_dist_info()
    for turn in (0, 1):  # rank 0 downloads, the others wait and read
        if (rank == 0) == (turn == 0) and not osp.isfile(cached):
            os.makedirs(model_dir, exist_ok=True)
            download_url_to_file(filename, cached, progress=rank == 0)
        if world_size > 1 and turn == 0:
            torch_dist.barrier()
    return safe_load(cached, map_location=map_location)


def register_safe_checkpoint_loader() -> None:
    """Make mmengine load local and http(s) checkpoints through
    :func:`safe_load`.

    Replaces mmengine's loaders for local paths (scheme ``''``), used by
    ``load_from``, ``--resume``, ``tools/test.py`` and ``init_cfg``
    ``Pretrained``, and for ``http://``/``https://`` URLs.
    """
    CheckpointLoader.register_scheme(
        prefixes='', loader=_load_from_local, force=True)
    CheckpointLoader.register_scheme(
        prefixes=('http://', 'https://'), loader=_load_from_http, force=True)

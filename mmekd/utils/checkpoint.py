# Copyright (c) mmekd contributors. All rights reserved.
"""Safe checkpoint loading for torch >= 2.6 with mmengine 0.10.x.

Torch loads with ``weights_only=True``: only tensors, containers and an
allow-list of globals are unpickled. MMEngine's own checkpoints carry a few
harmless objects (its ``HistoryBuffer`` log history, numpy arrays and
scalars), which mmengine 0.10.7 does not allow-list, so ``--resume`` and
``tools/test.py`` fail. :func:`safe_load` allow-lists exactly the names they
pickle through, mapped to inert stand-ins that are rebuilt from validated
data after unpickling (:mod:`mmekd.utils.safe_objects`): no numpy or
mmengine code runs on the file's bytes. Anything else (a pickled function,
a class that runs code when rebuilt, an object dtype) is refused with
:class:`UnsafeCheckpointError`; there is no fallback to unrestricted
unpickling.
"""
import os
import os.path as osp
import pickle
import zipfile
from typing import Any, List

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from .refusal import RefusalError
from .safe_objects import UnsafeCheckpointError, materialize, stand_ins


class CorruptCheckpointError(RefusalError, RuntimeError):
    """A checkpoint file is truncated or not a PyTorch checkpoint."""


def allowed_globals() -> List[Any]:
    """The globals, beyond torch's defaults, a checkpoint may contain: the
    names numpy arrays/scalars and mmengine's ``HistoryBuffer`` pickle
    through, each mapped to an inert stand-in (see
    :mod:`mmekd.utils.safe_objects`)."""
    return stand_ins()


def safe_load(f, map_location=None, mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` and mmengine's allow-list.

    Args:
        f: A path or a file-like object.
        map_location: As for :func:`torch.load`.
        mmap (bool): Map the tensors' storage instead of reading it (a zip
            checkpoint given by path; others are read). Defaults to False.

    Raises:
        UnsafeCheckpointError: The checkpoint contains something that is not
            allow-listed (e.g. a pickled callable); nothing of it is run.
    """
    name = f if isinstance(f, str) else getattr(f, 'name', repr(f))
    if isinstance(f, str) and osp.isdir(f):
        raise IsADirectoryError(
            f'checkpoint {f} is a directory, not a checkpoint file (give the '
            '.pth file inside it)')
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            mmap = mmap and isinstance(f, str) and zipfile.is_zipfile(f)
            loaded = torch.load(
                f, map_location=map_location, weights_only=True, mmap=mmap)
        return materialize(loaded)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(
            f'Refusing to load checkpoint {name}: {e}') from None
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
    except (RuntimeError, EOFError, KeyError, ValueError, TypeError,
            IndexError, MemoryError, RecursionError) as e:
        # Zip reader errors, or a legacy/garbage stream the unpickler chokes
        # on (e.g. KeyError for a memo lookup in random bytes).
        raise CorruptCheckpointError(
            f'Cannot read checkpoint {name}: the file is truncated or not a '
            f'PyTorch checkpoint ({type(e).__name__}: '
            f'{str(e).splitlines()[0] if str(e) else ""})') from None


# The state dict of the checkpoint last read by the loaders below and its
# file name, so that a later refusal can name the file.
_last_loaded: List[Any] = [None, None]


def _remember(ckpt: Any, filename: str) -> Any:
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    _last_loaded[:] = [state, filename]
    return ckpt


def loaded_from(state_dict: Any) -> str:
    """``'checkpoint <file>'`` if ``state_dict`` (or a copy of it with
    revised keys, same length) came from the last file loaded, else
    ``'the checkpoint'``."""
    last, name = _last_loaded
    if last is not None and (state_dict is last or (
            isinstance(last, dict) and isinstance(state_dict, dict)
            and len(last) == len(state_dict))):
        return f'checkpoint {name}'
    return 'the checkpoint'


def _load_from_local(filename: str, map_location=None):
    filename = osp.expanduser(filename)
    if not osp.exists(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    return _remember(safe_load(filename, map_location=map_location),
                     filename)


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
    return _remember(safe_load(cached, map_location=map_location), filename)


def register_safe_checkpoint_loader() -> None:
    """Make mmengine load local and http(s) checkpoints through
    :func:`safe_load`.

    Replaces mmengine's loaders for local paths (scheme ``''``), used by
    ``load_from``, ``--resume``, ``tools/test.py`` and ``init_cfg``
    ``Pretrained``, and for ``http://``/``https://`` URLs; and check what
    is loaded into a model (:func:`mmekd.utils.checkpoint_keys.check_fit`:
    it must fit at least half of the model's tensors, and hold no NaN or
    infinity).
    """
    CheckpointLoader.register_scheme(
        prefixes='', loader=_load_from_local, force=True)
    CheckpointLoader.register_scheme(
        prefixes=('http://', 'https://'), loader=_load_from_http, force=True)
    from .checkpoint_keys import register_checked_loading
    register_checked_loading()

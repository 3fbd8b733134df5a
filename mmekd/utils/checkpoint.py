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

Before torch reads a file, :func:`safe_load` checks its container: a
regular file (not a FIFO or a device), and a zip archive whose records are
stored as ``torch.save`` stores them (uncompressed, inside the file, not
overlapping), or torch's legacy format. After unpickling, every tensor must
cover its elements without overlap inside its storage.
"""
import os
import os.path as osp
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, List
from urllib.parse import urlparse

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_dist_info
from mmengine.runner.checkpoint import CheckpointLoader
from torch.hub import download_url_to_file, get_dir

from .refusal import RefusalError
from .regular_file import NotARegularFileError, open_regular_file
from .safe_objects import UnsafeCheckpointError, materialize, stand_ins

_ZIP_MAGIC = b'PK\x03\x04'  # what torch.load itself checks
# torch's legacy format starts with a pickle of this number.
_LEGACY_STARTS = tuple(
    pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=p)
    for p in range(pickle.HIGHEST_PROTOCOL + 1))


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

    Before torch reads anything, the file must be a regular file (symlinks
    resolved) in one of torch's formats: a zip archive whose records are
    all stored uncompressed, inside the file and not overlapping, or the
    legacy format (a ``.safetensors`` path goes to torch as it is). After
    unpickling, every tensor must cover its elements without overlap inside
    its storage.

    Args:
        f: A path or a file-like object.
        map_location: As for :func:`torch.load`.
        mmap (bool): Map the tensors' storage instead of reading it (a zip
            checkpoint given by path; others are read). Defaults to False.

    Raises:
        FileNotFoundError: The path does not exist.
        IsADirectoryError: The path is a directory.
        UnsafeCheckpointError: The checkpoint contains something that is not
            allow-listed (e.g. a pickled callable), a compressed or forged
            zip record, or a tensor whose elements overlap; nothing of it is
            run or inflated.
        RuntimeError: The file is not a PyTorch checkpoint (a FIFO, a device,
            random bytes, a plain pickle) or is truncated.
    """
    name = f if isinstance(f, str) else getattr(f, 'name', repr(f))
    opened = _open_checkpoint(f) if isinstance(f, str) else None
    try:
        return _load(f, opened or f, name, map_location, mmap)
    finally:
        if opened is not None:
            opened.close()


def _open_checkpoint(path: str) -> BinaryIO:
    try:
        return open_regular_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f'checkpoint {path} does not exist') from None
    except IsADirectoryError:
        raise IsADirectoryError(
            f'checkpoint {path} is a directory, not a checkpoint file (give '
            'the .pth file inside it)') from None
    except NotARegularFileError as e:
        raise RuntimeError(
            f'Cannot read checkpoint {path}: the file is not a PyTorch '
            f'checkpoint but {e.kind}') from None


def _load(f, source, name: str, map_location, mmap: bool) -> Any:
    """Check ``source`` (``f`` opened) and load it."""
    is_zip = False
    if not (isinstance(f, str) and f.endswith('.safetensors')):
        is_zip = _check_container(source, name)
    # torch maps only a path: it opens ``f`` again (checked just above).
    mmap = mmap and is_zip and isinstance(f, str)
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            loaded = torch.load(
                f if mmap else source, map_location=map_location,
                weights_only=True, mmap=mmap)
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


def _check_container(f: BinaryIO, name: str) -> bool:
    """Whether ``f`` is a zip checkpoint (else torch's legacy format) whose
    records torch may read as they are; raise if it is neither, or if a
    record is compressed or declares bytes the file does not hold."""
    start = f.tell()
    head = f.read(max(map(len, _LEGACY_STARTS)))
    size = f.seek(0, os.SEEK_END) - start
    f.seek(start)
    if head.startswith(_LEGACY_STARTS):
        return False
    if not head.startswith(_ZIP_MAGIC):
        raise RuntimeError(
            f'Cannot read checkpoint {name}: the file is not a PyTorch '
            'checkpoint (' + ('it is empty' if not head else 'it starts with '
                              "neither a zip header nor the magic number of "
                              "torch's legacy format") + ')')
    try:
        with zipfile.ZipFile(f) as archive:  # reads the central directory
            records = archive.infolist()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError,
            NotImplementedError, struct.error) as e:
        raise RuntimeError(
            f'Cannot read checkpoint {name}: the file is truncated or not a '
            f'PyTorch checkpoint ({type(e).__name__}: {e})') from None
    finally:
        f.seek(start)
    for r in records:
        if r.compress_type != zipfile.ZIP_STORED:
            method = zipfile.compressor_names.get(
                r.compress_type, f'method {r.compress_type}')
            raise UnsafeCheckpointError(
                f'Refusing to load checkpoint {name}: its record '
                f'{r.filename!r} is compressed ({method}), but torch.save '
                'stores every record uncompressed; it is not inflated (it '
                f'declares {r.file_size} bytes)')
        if r.compress_size != r.file_size or (r.header_offset + r.file_size
                                              > size):
            raise UnsafeCheckpointError(
                f'Refusing to load checkpoint {name}: its record '
                f'{r.filename!r} declares {r.file_size} bytes that the '
                f'{size}-byte file does not hold')
    total = sum(r.file_size for r in records)
    if total > size:
        raise UnsafeCheckpointError(
            f'Refusing to load checkpoint {name}: its records declare '
            f'{total} bytes in all, more than the {size} bytes of the file '
            '(they overlap)')
    return True


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
    return _remember(safe_load(filename, map_location=map_location),
                     filename)


def _load_from_http(filename: str, map_location=None, model_dir=None):
    """Download once into the torch hub cache (rank 0 first), then
    :func:`safe_load`; mmengine's ``load_url`` calls ``torch.load`` with
    torch's default, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` turns off."""
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
    :func:`safe_load`: mmengine's loaders for local paths (scheme ``''``),
    used by ``load_from``, ``--resume``, ``tools/test.py`` and ``init_cfg``
    ``Pretrained``, and for ``http://``/``https://`` URLs."""
    CheckpointLoader.register_scheme(
        prefixes='', loader=_load_from_local, force=True)
    CheckpointLoader.register_scheme(
        prefixes=('http://', 'https://'), loader=_load_from_http, force=True)

# Copyright (c) mmekd contributors. All rights reserved.
"""Crash-safe file replacement: write next to the target, then rename."""
import os
import os.path as osp
from typing import Union


def fsync_and_replace(tmp_path: str, path: str) -> None:
    """Flush ``tmp_path`` to disk and atomically rename it to ``path``.

    ``os.replace`` is atomic on POSIX and Windows when both paths are on the
    same file system, so ``path`` is always either the old or the complete
    new file, never a truncated one, whatever kills the process.
    """
    with open(tmp_path, 'rb') as f:
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    _fsync_dir(osp.dirname(osp.abspath(path)))


def atomic_write(path: str, data: Union[bytes, str]) -> None:
    """Write ``data`` to ``path`` atomically (temp file + ``os.replace``)."""
    tmp_path = f'{path}.tmp{os.getpid()}'
    mode = 'wb' if isinstance(data, bytes) else 'w'
    try:
        with open(tmp_path, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise
    _fsync_dir(osp.dirname(osp.abspath(path)))


def _fsync_dir(directory: str) -> None:
    """Make a rename durable (POSIX); a no-op where directories can't be
    opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

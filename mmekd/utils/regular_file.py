# Copyright (c) mmekd contributors. All rights reserved.
"""Open a file from elsewhere only if it is a regular file.

``open()`` on a FIFO blocks until something writes to it, and a device
(``/dev/urandom``, or a symlink to it) never ends: a loader handed either
hangs or reads garbage forever. :func:`open_regular_file` looks at what the
path resolves to before opening it, and again at what it opened.
"""
import os
import os.path as osp
import stat
from typing import BinaryIO

_KINDS = ((stat.S_ISDIR, 'a directory'),
          (stat.S_ISFIFO, 'a FIFO (named pipe)'),
          (stat.S_ISCHR, 'a character device'),
          (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket'))


class NotARegularFileError(OSError):
    """A path that exists but is not a regular file (a FIFO, a device, a
    socket). ``kind`` says what it is, e.g. ``'a FIFO (named pipe)'``."""

    def __init__(self, path: str, kind: str):
        target = osp.realpath(path)
        self.kind = kind + (f' ({target})' if target != osp.abspath(path)
                            else '')
        super().__init__(f'{path} is {self.kind}, not a regular file')


def _kind(mode: int) -> str:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return '' if stat.S_ISREG(mode) else 'not a regular file'


def open_regular_file(path: str) -> BinaryIO:
    """Open ``path`` for reading in binary mode if it is a regular file.

    Symlinks are followed. Anything else is refused without being read: a
    device is not even opened, and a FIFO swapped in after that check is
    opened without blocking and refused.

    Args:
        path (str): The file.

    Returns:
        BinaryIO: The open file (the caller closes it).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory.
        NotARegularFileError: ``path`` is a FIFO, a device or a socket.
    """
    _refuse(path, os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0)
                 | getattr(os, 'O_CLOEXEC', 0))
    try:
        _refuse(path, os.fstat(fd).st_mode)
        if hasattr(os, 'O_NONBLOCK'):
            os.set_blocking(fd, True)
        return os.fdopen(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise


def _refuse(path: str, mode: int) -> None:
    kind = _kind(mode)
    if kind == 'a directory':
        raise IsADirectoryError(f'{path} is a directory, not a file')
    if kind:
        raise NotARegularFileError(path, kind)

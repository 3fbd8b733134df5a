# Copyright (c) mmekd contributors. All rights reserved.
"""Crash-safe file replacement (write next to the target, then rename), and
the check that an output is not one of the inputs."""
import os
import os.path as osp
from contextlib import contextmanager
from typing import Iterator, Mapping, Optional, Union

from .refusal import RefusalError


class OutputIsInputError(RefusalError, ValueError):
    """An output path is (resolves to) one of the input files."""


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


@contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """A temp path next to ``path`` that replaces ``path`` when the block
    completes.

    Write the whole file to the yielded path (``torch.save``,
    ``mmengine.dump``, ``savefig``, an ONNX exporter...): on success it is
    fsynced and renamed over ``path`` (:func:`fsync_and_replace`), so
    ``path`` is always the old or the complete new file. On an exception the
    temp file is removed and ``path`` is untouched. The temp name keeps the
    extension (``model.tmp<pid>.pth``), for writers that pick the format
    from it.

    Args:
        path (str): The file to write.

    Yields:
        str: The temp path to write to.
    """
    root, ext = osp.splitext(path)
    tmp_path = f'{root}.tmp{os.getpid()}{ext}'
    try:
        yield tmp_path
        fsync_and_replace(tmp_path, path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


def atomic_write(path: str, data: Union[bytes, str]) -> None:
    """Write ``data`` to ``path`` atomically (temp file + ``os.replace``)."""
    mode = 'wb' if isinstance(data, bytes) else 'w'
    with atomic_output(path) as tmp_path:
        with open(tmp_path, mode) as f:
            f.write(data)


def check_outputs_not_inputs(outputs: Mapping[str, Optional[str]],
                             inputs: Mapping[str, Optional[str]]) -> None:
    """Refuse to write an output over one of the inputs.

    Paths are compared with :func:`os.path.samefile` where both exist (a
    symbolic or hard link to an input is that input) and by
    :func:`os.path.realpath` otherwise. ``None`` paths are skipped.

    Args:
        outputs (Mapping[str, str | None]): ``{what: path}`` of the files to
            be written, e.g. ``{'out': 'a.pth'}``.
        inputs (Mapping[str, str | None]): ``{what: path}`` of the files
            read, e.g. ``{'checkpoint': 'a.pth'}``.

    Raises:
        OutputIsInputError: An output is an input; the message names both.
    """
    for out_name, out_path in outputs.items():
        for in_name, in_path in inputs.items():
            if out_path is None or in_path is None:
                continue
            if osp.exists(out_path) and osp.exists(in_path):
                same = osp.samefile(out_path, in_path)
            else:
                same = osp.realpath(out_path) == osp.realpath(in_path)
            if same:
                raise OutputIsInputError(
                    f'the output {out_name} {out_path} is the input '
                    f'{in_name} {in_path}: writing it would destroy the '
                    'input; choose another output path')


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

# Copyright (c) mmekd contributors. All rights reserved.
"""What every mmekd tool's command line shares: ``--cfg-options`` and one
line per refusal.

Example::

    from mmekd.utils.cli import add_cfg_options, read_config, tool_main

    def main(argv=None):
        parser = argparse.ArgumentParser()
        parser.add_argument('config')
        add_cfg_options(parser)
        args = parser.parse_args(argv)
        cfg = read_config(args.config, args.cfg_options)
        ...

    if __name__ == '__main__':
        tool_main(main)()
"""
import copy
import functools
import inspect
import logging
import os.path as osp
from typing import Callable, Optional

from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

from .refusal import RefusalError, one_line

# Refusals of bad input: mmekd's own, and the OS's for a path that is not
# there or is a folder (their messages name the path).
REFUSALS = (RefusalError, FileNotFoundError, IsADirectoryError,
            NotADirectoryError, PermissionError)


def add_cfg_options(parser) -> None:
    """``--cfg-options key=value ...``, as MMPretrain's tools take it."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value (e.g. '
        'model.backbone.base_channels=16 '
        'model.backbone.sub_stage_blocks="[[2,2,2,2]]")')


def read_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """``Config.fromfile(path)`` with ``--cfg-options`` merged in.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    cfg = Config.fromfile(path)
    if cfg_options:
        # (a merge consumes the ``_delete_`` keys of what it merges)
        cfg.merge_from_dict(copy.deepcopy(cfg_options))
    return cfg


def _log_to_files(message: str) -> None:
    """Write ``message`` to the log files of the current MMEngine logger
    (the console gets it once, from :func:`tool_main`)."""
    logger = MMLogger.get_current_instance()
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0,
                               message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def tool_main(main: Callable, prog: Optional[str] = None) -> Callable:
    """``main`` of a tool, ending with one line ``<prog>: error: <message>``
    (exit status 1, no traceback) on a refusal (:data:`REFUSALS`); the line
    also goes to the run's log file, if one is open.

    Args:
        main (callable): The tool's entry point.
        prog (str, optional): Name in the message. Defaults to the stem of
            the file that defines ``main``.

    Returns:
        callable: ``main`` wrapped; other exceptions pass unchanged.
    """
    name = prog or osp.splitext(osp.basename(inspect.getfile(main)))[0]

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except REFUSALS as e:
            message = f'{name}: error: {one_line(e)}'
            _log_to_files(message)
            raise SystemExit(message) from None

    return wrapped

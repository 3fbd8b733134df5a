# Copyright (c) mmekd contributors. All rights reserved.
"""The one base class of mmekd's refusals of bad input.

A file, config field or argument that mmekd refuses raises a subclass of
:class:`RefusalError` whose message names the file or field and the
reason (``UnsafeCheckpointError``, ``CheckpointMismatchError``,
``NonFiniteStateError``, ``LiteralConfigError``, ``ExportError``, ...).
Each also keeps its former built-in base (``ValueError``, ...), so code
that caught those still does. Tools report any of them as one line
(:func:`mmekd.utils.cli.tool_main`).
"""


class RefusalError(Exception):
    """Input mmekd refuses; the message names what and why.

    Example::

        class ExportError(RefusalError, ValueError):
            '''The requested net cannot be exported.'''
    """


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (a listing's lines joined)."""
    lines = [line.strip() for line in str(error).splitlines()]
    return ' '.join(line for line in lines if line) or type(error).__name__

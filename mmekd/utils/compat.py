# Copyright (c) mmekd contributors. All rights reserved.
"""Make MMEngine's version checks constant for ``torch.compile``.

MMEngine 0.10.x calls :func:`mmengine.utils.digit_version` in code that a
compiled ``train_step`` traces: ``mmengine.runner.amp.autocast`` (entered by
``AmpOptimWrapper.optim_context``) asserts
``digit_version(TORCH_VERSION) >= digit_version('1.5.0')``, and some
MMPretrain layers compare ``digit_version(torch.__version__)`` in
``forward``. ``digit_version`` builds a ``packaging.version.Version``;
packaging >= 26 parses with ``frozenset.issuperset(version_str)``, which
TorchDynamo 2.11 mis-traces, so tracing a valid version such as
``'2.11.0+cu130'`` raises ``InvalidVersion`` and ``--compile`` fails.

:func:`register_dynamo_safe_version_checks` replaces ``digit_version`` with
a thin wrapper whose inner call is marked with
:func:`torch.compiler.assume_constant_result`: Dynamo runs it eagerly on its
(constant, string) arguments and folds the tuple into the graph instead of
tracing ``packaging``. The wrapper copies that tuple with ``tuple()``
because Dynamo 2.11 cannot compare the folded tuple itself (building a guard
on its constant source raises ``NotImplementedError``). In eager mode the
wrapper returns exactly what ``digit_version`` returns.
"""
import functools
import sys
from typing import Callable, Optional, Tuple

import torch

# Set on the wrapper, so a second registration recognises it.
_WRAPPED_FLAG = '_mmekd_dynamo_constant'


def _assume_constant_result() -> Optional[Callable]:
    """``torch.compiler.assume_constant_result`` (``torch._dynamo``'s on
    older torch), or ``None`` where neither exists."""
    compiler = getattr(torch, 'compiler', None)
    fn = getattr(compiler, 'assume_constant_result', None)
    if fn is not None:
        return fn
    try:
        import torch._dynamo as dynamo
    except ImportError:  # pragma: no cover - torch without dynamo
        return None
    return getattr(dynamo, 'assume_constant_result', None)


def is_dynamo_safe_version_fn(fn: Callable) -> bool:
    """Whether ``fn`` is a wrapper made by
    :func:`register_dynamo_safe_version_checks`."""
    return bool(getattr(fn, _WRAPPED_FLAG, False))


def _wrap_digit_version(digit_version: Callable,
                        assume_constant_result: Callable) -> Callable:
    """A ``digit_version`` whose result Dynamo folds into the graph."""

    def folded(version_str: str, length: int = 4) -> Tuple[int, ...]:
        return digit_version(version_str, length)

    folded = assume_constant_result(folded)

    @functools.wraps(digit_version)
    def wrapper(version_str: str, length: int = 4) -> Tuple[int, ...]:
        # A fresh tuple: Dynamo 2.11 fails to compare the folded one.
        return tuple(folded(version_str, length))

    # ``functools.wraps`` copies ``__dict__``: the wrapper itself must be
    # traced (to make the copy), never folded.
    wrapper.__dict__.pop('_dynamo_marked_constant', None)
    setattr(wrapper, _WRAPPED_FLAG, True)
    return wrapper


def register_dynamo_safe_version_checks() -> bool:
    """Make ``mmengine.utils.digit_version`` constant for TorchDynamo.

    Rebinds ``digit_version`` in :mod:`mmengine.utils.version_utils`,
    :mod:`mmengine.utils` and every already imported module that holds the
    original function object (``mmengine.runner.amp``,
    ``mmengine.optim.optimizer.amp_optimizer_wrapper``, MMPretrain's layers,
    ...); modules imported later get the wrapper from :mod:`mmengine.utils`.
    Only module attributes that *are* the original function are touched.

    Idempotent; a no-op where torch has no ``assume_constant_result``.

    Returns:
        bool: Whether ``digit_version`` is now the Dynamo-safe wrapper.
    """
    assume_constant_result = _assume_constant_result()
    if assume_constant_result is None:
        return False
    from mmengine.utils import version_utils

    current = version_utils.digit_version
    if is_dynamo_safe_version_fn(current):
        wrapper, original = current, current.__wrapped__
    else:
        wrapper = _wrap_digit_version(current, assume_constant_result)
        original = current
    for module in list(sys.modules.values()):
        namespace = getattr(module, '__dict__', None)
        if (isinstance(namespace, dict)
                and namespace.get('digit_version') is original):
            setattr(module, 'digit_version', wrapper)
    return is_dynamo_safe_version_fn(version_utils.digit_version)

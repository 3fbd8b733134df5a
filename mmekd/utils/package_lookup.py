# Copyright (c) mmekd contributors. All rights reserved.
"""Find installed OpenMMLab packages without ``pkg_resources``.

MMEngine 0.10.x resolves a cross-package base such as
``_base_ = ['mmpretrain::resnet/resnet34_8xb16_cifar10.py']`` through
``mmengine.utils.is_installed`` and ``get_installed_path``, which import
``pkg_resources``. setuptools >= 82 no longer ships it, so the config fails
with ``ModuleNotFoundError: No module named 'pkg_resources'``.

:func:`register_package_lookup` (run by ``import mmekd``) replaces those two
functions, where MMEngine looks them up, by versions built on
:mod:`importlib.metadata` and :func:`importlib.util.find_spec` that answer
the same questions for any installed package. Where ``pkg_resources`` can
be imported, nothing is changed.
"""
import importlib.metadata
import importlib.util
import os.path as osp
import sys
from typing import List

# Set on the replacements, so a second registration recognises them.
_PATCHED_FLAG = '_mmekd_importlib_lookup'
# (module, attribute) pairs holding MMEngine's functions: the defining
# module and the modules that imported them by name.
_TARGETS = (('mmengine.utils.package_utils', 'is_installed'),
            ('mmengine.utils.package_utils', 'get_installed_path'),
            ('mmengine.utils', 'is_installed'),
            ('mmengine.utils', 'get_installed_path'),
            ('mmengine.config.config', 'is_installed'),
            ('mmengine.config.config', 'get_installed_path'),
            ('mmengine.hub.hub', 'get_installed_path'))


def _module_names(package: str) -> List[str]:
    """Import names that distribution ``package`` may install: the name
    itself, then its ``top_level.txt`` entries (e.g. ``mmcv-lite`` ->
    ``mmcv``)."""
    names = [package, package.replace('-', '_')]
    try:
        top_level = importlib.metadata.distribution(package).read_text(
            'top_level.txt')
    except importlib.metadata.PackageNotFoundError:
        top_level = None
    names += (top_level or '').split()
    return list(dict.fromkeys(names))


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def is_installed(package: str) -> bool:
    """Whether distribution or module ``package`` is installed (what
    ``mmengine.utils.is_installed`` answers, without ``pkg_resources``).

    Args:
        package (str): A distribution name (``mmpretrain``, ``mmcv-lite``)
            or an importable module name.

    Returns:
        bool: True if the distribution is installed, or a module of that
        name can be imported from a file.
    """
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        spec = _find_spec(package)
        return spec is not None and spec.origin is not None


def get_installed_path(package: str) -> str:
    """The folder of an installed package (what
    ``mmengine.utils.get_installed_path`` returns, without
    ``pkg_resources``); works for editable installs too.

    Args:
        package (str): A distribution name or an importable module name.

    Returns:
        str: The package's directory, e.g.
        ``.../site-packages/mmpretrain``.

    Raises:
        RuntimeError: ``package`` is a namespace package.
        importlib.metadata.PackageNotFoundError: Nothing of that name is
            installed.
    """
    for name in _module_names(package):
        spec = _find_spec(name)
        if spec is None:
            continue
        if spec.origin is None:
            raise RuntimeError(
                f'{package} is a namespace package, which is invalid for '
                '`get_installed_path`')
        return osp.dirname(spec.origin)
    raise importlib.metadata.PackageNotFoundError(
        f'{package} is not installed (no distribution or importable module '
        'of that name)')


setattr(is_installed, _PATCHED_FLAG, True)
setattr(get_installed_path, _PATCHED_FLAG, True)


def _has_pkg_resources() -> bool:
    return 'pkg_resources' in sys.modules or _find_spec(
        'pkg_resources') is not None


def register_package_lookup(force: bool = False) -> bool:
    """Make MMEngine find installed packages through :mod:`importlib`.

    Rebinds ``is_installed`` / ``get_installed_path`` in
    ``mmengine.utils.package_utils``, ``mmengine.utils``,
    ``mmengine.config.config`` and ``mmengine.hub.hub`` (only attributes
    that are still MMEngine's own functions). Idempotent.

    Args:
        force (bool): Patch even where ``pkg_resources`` is importable.
            Defaults to False: a setuptools that still has it keeps
            MMEngine's functions.

    Returns:
        bool: Whether MMEngine now uses the importlib lookup.
    """
    if not force and _has_pkg_resources():
        return False
    replacements = dict(
        is_installed=is_installed, get_installed_path=get_installed_path)
    for module_name, attr in _TARGETS:
        module = importlib.import_module(module_name)
        current = getattr(module, attr, None)
        if current is None or getattr(current, _PATCHED_FLAG, False):
            continue
        if getattr(current, '__module__', '') != \
                'mmengine.utils.package_utils':
            continue  # replaced by someone else: leave theirs
        setattr(module, attr, replacements[attr])
    return True


def is_package_lookup_registered() -> bool:
    """Whether MMEngine's config parser uses :func:`register_package_lookup`'s
    functions."""
    from mmengine.config import config
    return all(
        getattr(getattr(config, attr), _PATCHED_FLAG, False)
        for attr in ('is_installed', 'get_installed_path'))

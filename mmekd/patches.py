# Copyright (c) mmekd contributors. All rights reserved.
"""What ``import mmekd`` changes outside mmekd: this list, all of it.

1. ``warnings``: mmcv-lite's warning that ``MultiScaleDeformableAttention``
   (a detection op no mmekd model uses; mmcv-lite has no compiled ops) is
   missing is silenced; torch's advice to use fewer DataLoader workers is
   shown once per text instead of for every loader (a ``showwarning``
   wrapper: a 'once' filter is reset by every change of the filters).
2. ``mmengine.utils`` (and the config parser, the hub): installed packages
   are found through :mod:`importlib` where setuptools has no
   ``pkg_resources``, so ``_base_ = 'mmpretrain::...'`` resolves
   (:mod:`mmekd.utils.package_lookup`).
3. ``mmengine.runner.CheckpointLoader``: local and http(s) checkpoints load
   with ``weights_only=True`` and an allow-list of inert stand-ins for what
   MMEngine's own checkpoints hold (:mod:`mmekd.utils.checkpoint`).
4. ``mmengine.runner.checkpoint.load_state_dict``: every load into a model
   (``load_from``, ``--resume``, ``init_cfg=Pretrained``,
   ``load_checkpoint``, ``get_model(pretrained=...)``) is checked first: it
   must fit at least half of the model's values and hold no NaN or infinity
   (:func:`mmekd.utils.checkpoint_keys.check_fit`).
5. ``mmengine.utils.digit_version``: constant for TorchDynamo, so compiled
   code can trace MMEngine's version checks (:mod:`mmekd.utils.compat`).

Each is idempotent; :func:`install` applies them (``mmekd/__init__.py``
does, before MMPretrain is imported).
"""
import functools
import warnings

from mmengine.runner import checkpoint as mm_checkpoint

from .utils.checkpoint import loaded_from, register_safe_checkpoint_loader
from .utils.checkpoint_keys import check_fit
from .utils.compat import register_dynamo_safe_version_checks
from .utils.package_lookup import register_package_lookup

_WRAPPED = 'mmekd_wrapped'


def show_dataloader_advice_once(show):
    """``show`` (a ``warnings.showwarning``) that shows torch's advice on
    DataLoader workers once per text."""
    shown = set()

    def showwarning(message, category, filename, lineno, file=None,
                    line=None):
        text = str(message)
        if text.startswith('This DataLoader will create'):
            if text in shown:
                return
            shown.add(text)
        show(message, category, filename, lineno, file, line)

    setattr(showwarning, _WRAPPED, True)
    return showwarning


def quiet_import_warnings() -> None:
    """Change 1 (see the module docstring)."""
    warnings.filterwarnings(
        'ignore',
        message='Fail to import ``MultiScaleDeformableAttention``',
        category=UserWarning)
    if not getattr(warnings.showwarning, _WRAPPED, False):
        warnings.showwarning = show_dataloader_advice_once(
            warnings.showwarning)


def check_every_load() -> None:
    """Change 4 (see the module docstring)."""
    original = getattr(mm_checkpoint.load_state_dict, '__wrapped__',
                       mm_checkpoint.load_state_dict)

    @functools.wraps(original)
    def load_state_dict(module, state_dict, strict=False, logger=None):
        check_fit(module, state_dict, loaded_from(state_dict))
        return original(module, state_dict, strict, logger)

    mm_checkpoint.load_state_dict = load_state_dict


def install() -> None:
    """Apply every change of the module docstring, in its order."""
    quiet_import_warnings()
    register_package_lookup()
    register_safe_checkpoint_loader()
    check_every_load()
    register_dynamo_safe_version_checks()

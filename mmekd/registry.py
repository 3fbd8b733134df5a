# Copyright (c) mmekd contributors. All rights reserved.
"""Registries of mmekd: children of MMPretrain's registries, scope ``mmekd``.

Configs keep ``default_scope = 'mmpretrain'`` and refer to our components as
``type='mmekd.<Name>'``. MMEngine then imports :mod:`mmekd.registry` from the
prefix alone and, through ``locations``, the module that registers ``Name``.
"""
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import Registry
from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS
from mmpretrain.registry import HOOKS as MMPRETRAIN_HOOKS
from mmpretrain.registry import LOOPS as MMPRETRAIN_LOOPS
from mmpretrain.registry import METRICS as MMPRETRAIN_METRICS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmpretrain.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMPRETRAIN_OPTIM_WRAPPER_CONSTRUCTORS
from mmpretrain.registry import OPTIM_WRAPPERS as MMPRETRAIN_OPTIM_WRAPPERS
from mmpretrain.registry import TRANSFORMS as MMPRETRAIN_TRANSFORMS

__all__ = [
    'MODELS', 'HOOKS', 'LOOPS', 'METRICS', 'DATASETS', 'TRANSFORMS',
    'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'FUNCTIONS',
    'MODEL_WRAPPERS'
]

MODELS = Registry(
    'model', parent=MMPRETRAIN_MODELS, scope='mmekd',
    locations=['mmekd.models'])
HOOKS = Registry(
    'hook', parent=MMPRETRAIN_HOOKS, scope='mmekd',
    locations=['mmekd.engine'])
LOOPS = Registry(
    'loop', parent=MMPRETRAIN_LOOPS, scope='mmekd',
    locations=['mmekd.engine'])
METRICS = Registry(
    'metric', parent=MMPRETRAIN_METRICS, scope='mmekd',
    locations=['mmekd.evaluation'])
DATASETS = Registry(
    'dataset', parent=MMPRETRAIN_DATASETS, scope='mmekd',
    locations=['mmekd.datasets'])
TRANSFORMS = Registry(
    'transform', parent=MMPRETRAIN_TRANSFORMS, scope='mmekd',
    locations=['mmekd.datasets'])
OPTIM_WRAPPERS = Registry(
    'optim_wrapper', parent=MMPRETRAIN_OPTIM_WRAPPERS, scope='mmekd',
    locations=['mmekd.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMPRETRAIN_OPTIM_WRAPPER_CONSTRUCTORS, scope='mmekd',
    locations=['mmekd.engine'])
# Children of MMEngine's root registries (not MMPretrain's): the Runner looks
# these up on the root (``FUNCTIONS.get`` for ``collate_fn``,
# ``MODEL_WRAPPERS.get`` in ``wrap_model``), which finds direct children only.
FUNCTIONS = Registry(
    'function', parent=MMENGINE_FUNCTIONS, scope='mmekd',
    locations=['mmekd.datasets'])
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='mmekd',
    locations=['mmekd.models'])

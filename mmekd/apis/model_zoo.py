# Copyright (c) mmekd contributors. All rights reserved.
"""Make mmekd's model zoo (``model-index.yml``) visible to MMPretrain's
``get_model``, ``list_models`` and inferencers.

No weights are published yet. A zoo entry's ``weights`` therefore points to
the ``mmekd-unpublished://`` scheme, whose loader raises
:class:`UnpublishedWeightsError` naming the command that trains the
checkpoint: ``get_model(name, pretrained=True)`` fails with that message
instead of MMPretrain's warning and a randomly initialised model.
"""
import os.path as osp
from typing import Optional, Tuple

from mmengine.runner import CheckpointLoader
from mmpretrain.apis import ModelHub

import mmekd.models  # noqa: F401  (the zoo's configs build mmekd models)

_registered = False
UNPUBLISHED_SCHEME = 'mmekd-unpublished://'


class UnpublishedWeightsError(FileNotFoundError):
    """A model-zoo entry was asked for weights that are not published."""


def unpublished_weights_message(name: str, epochs: Optional[int] = None
                                ) -> str:
    """What to do instead of ``pretrained=True`` for zoo entry ``name``.

    Args:
        name (str): A model-zoo name.
        epochs (int, optional): Its training epochs (the metafile's
            ``Epochs``), naming the last checkpoint. Defaults to None.

    Returns:
        str: The message of :class:`UnpublishedWeightsError`.
    """
    last = f'epoch_{epochs}.pth' if epochs else 'epoch_N.pth'
    ckpt = f'work_dirs/{name}/{last}'
    return (f'No pretrained weights are published for {name!r} yet. Train '
            'the DDNN that holds this net (one checkpoint holds every net) '
            f'with `python tools/train.py configs/ddnn/{name}.py`, then pass '
            f'the local file: mmpretrain.get_model({name!r}, '
            f'pretrained={ckpt!r})')


def load_from_unpublished(filename: str, map_location=None):
    name, _, epochs = filename[len(UNPUBLISHED_SCHEME):].partition('@')
    raise UnpublishedWeightsError(
        unpublished_weights_message(name, int(epochs) if epochs else None))


def _register_unpublished_scheme() -> None:
    CheckpointLoader.register_scheme(
        prefixes=UNPUBLISHED_SCHEME, loader=load_from_unpublished, force=True)


def model_index_path() -> Tuple[str, str]:
    """Where mmekd's ``model-index.yml`` and its configs are.

    Returns:
        tuple[str, str]: The model-index file and the folder the config paths
        in it are relative to: ``mmekd/.mim`` for a packaged install, else the
        source tree (``pip install -e .``).
    """
    pkg = osp.dirname(osp.dirname(osp.abspath(__file__)))
    for root in (osp.join(pkg, '.mim'), osp.dirname(pkg)):
        index = osp.join(root, 'model-index.yml')
        if osp.isfile(index):
            return index, root
    raise FileNotFoundError(
        f'model-index.yml not found in {osp.join(pkg, ".mim")} or '
        f'{osp.dirname(pkg)}')


def register_model_zoo(index: Optional[str] = None,
                       config_prefix: Optional[str] = None) -> None:
    """Register mmekd's models with :class:`mmpretrain.apis.ModelHub`, so that
    ``mmpretrain.get_model('ddnn-ekd_resnet34_1xb128_cifar100',
    pretrained=PATH)`` and ``mmpretrain.list_models('ddnn*')`` find them.

    Entries without ``Weights`` (all of mmekd's, for now) get weights of
    the ``mmekd-unpublished://`` scheme: ``pretrained=True`` raises
    :class:`UnpublishedWeightsError` naming the training command and how to
    pass a local checkpoint (``pretrained=PATH``).

    Calling it again does nothing (MMPretrain refuses duplicate names).

    Args:
        index (str, optional): A model-index file. Defaults to mmekd's own
            (see :func:`model_index_path`).
        config_prefix (str, optional): Folder the config paths in ``index``
            are relative to. Defaults to the one of mmekd's own index.
    """
    global _registered
    if index is None:
        if _registered:
            return
        index, default_prefix = model_index_path()
        config_prefix = config_prefix or default_prefix
    # Register MMPretrain's own models first: ModelHub does so lazily on the
    # first lookup and would otherwise not notice a name clash with ours.
    ModelHub._register_mmpretrain_models()
    before = set(ModelHub._models_dict)
    ModelHub.register_model_index(index, config_prefix=config_prefix)
    _register_unpublished_scheme()
    for key in set(ModelHub._models_dict) - before:
        metainfo = ModelHub._models_dict[key]
        if metainfo.weights is None:
            epochs = (metainfo.metadata.epochs
                      if metainfo.metadata is not None else None)
            metainfo.weights = (f'{UNPUBLISHED_SCHEME}{metainfo.name}'
                                + (f'@{epochs}' if epochs else ''))
    if index == model_index_path()[0]:
        _registered = True

# Copyright (c) mmekd contributors. All rights reserved.
"""Make mmekd's model zoo (``model-index.yml``) visible to MMPretrain's
``get_model``, ``list_models`` and inferencers."""
import os.path as osp
from typing import Optional, Tuple

_registered = False


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
    import mmekd.models  # noqa: F401  (the configs build mmekd models)
    from mmpretrain.apis import ModelHub

    # Register MMPretrain's own models first: ModelHub does so lazily on the
    # first lookup and would otherwise not notice a name clash with ours.
    ModelHub._register_mmpretrain_models()
    ModelHub.register_model_index(index, config_prefix=config_prefix)
    if index == model_index_path()[0]:
        _registered = True

# Copyright (c) mmekd contributors. All rights reserved.
import ast
import glob
import importlib.metadata
import os.path as osp
import sys
import types

import mmcv
import mmengine
import mmpretrain
import pytest
from mmengine.config import Config

import mmekd  # noqa: F401  (registers the importlib package lookup)
from mmekd.utils import (is_package_lookup_registered,
                         register_package_lookup)
from mmekd.utils.package_lookup import get_installed_path, is_installed

MMPRETRAIN_CFGS = osp.join(
    osp.dirname(mmpretrain.__file__), '.mim', 'configs')


def test_lookup_answers_like_mmengine():
    assert get_installed_path('mmpretrain') == osp.dirname(
        mmpretrain.__file__)
    # Distribution name differs from the module name.
    assert get_installed_path('mmcv-lite') == osp.dirname(mmcv.__file__)
    assert get_installed_path('mmengine') == osp.dirname(mmengine.__file__)
    assert is_installed('mmpretrain') and is_installed('mmcv-lite')
    assert not is_installed('no_such_openmmlab_package')
    with pytest.raises(importlib.metadata.PackageNotFoundError,
                       match='no_such_openmmlab_package is not installed'):
        get_installed_path('no_such_openmmlab_package')


@pytest.mark.skipif(
    importlib.util.find_spec('pkg_resources') is not None,
    reason='this setuptools still ships pkg_resources')
def test_import_mmekd_registers_lookup_without_pkg_resources():
    assert is_package_lookup_registered()


def test_mmpretrain_base_resolves(tmp_path):
    # The config of issue 15: a stock MMPretrain base, one override.
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(
        "_base_ = ['mmpretrain::resnet/resnet34_8xb16_cifar10.py']\n"
        'model = dict(head=dict(num_classes=7))\n')
    cfg = Config.fromfile(str(cfg_file))
    stock = Config.fromfile(
        osp.join(MMPRETRAIN_CFGS, 'resnet', 'resnet34_8xb16_cifar10.py'))
    assert cfg.model.backbone.to_dict() == stock.model.backbone.to_dict()
    assert cfg.model.backbone.depth == 34
    assert cfg.model.head.num_classes == 7
    optimizer = cfg.optim_wrapper.optimizer.to_dict()
    assert optimizer.pop('_scope_') == 'mmpretrain'  # set by '::' bases
    assert optimizer == stock.optim_wrapper.optimizer.to_dict()
    assert cfg.train_dataloader.dataset.type == 'CIFAR10'


def test_mmengine_hub_get_config():
    from mmengine.hub import get_config
    cfg = get_config('mmpretrain::resnet/resnet18_8xb16_cifar10.py')
    assert cfg.model.backbone.type == 'ResNet_CIFAR'
    assert cfg.model.backbone.depth == 18


def _fake_mmengine_fn():
    def fn(package):
        raise AssertionError('mmengine original called')

    fn.__module__ = 'mmengine.utils.package_utils'
    return fn


def test_keeps_mmengine_where_pkg_resources_exists(monkeypatch):
    import mmengine.config.config as config_module
    import mmengine.hub.hub as hub_module
    import mmengine.utils as utils_module
    import mmengine.utils.package_utils as package_utils
    originals = {}
    for module in (package_utils, utils_module, config_module):
        for attr in ('is_installed', 'get_installed_path'):
            fake = originals.setdefault(attr, _fake_mmengine_fn())
            monkeypatch.setattr(module, attr, fake)
    monkeypatch.setattr(hub_module, 'get_installed_path',
                        originals['get_installed_path'])
    # A setuptools that still has pkg_resources: leave mmengine alone.
    monkeypatch.setitem(sys.modules, 'pkg_resources',
                        types.ModuleType('pkg_resources'))
    assert register_package_lookup() is False
    assert config_module.is_installed is originals['is_installed']
    assert not is_package_lookup_registered()
    # force=True (and a setuptools without it): every lookup is replaced.
    assert register_package_lookup(force=True) is True
    assert is_package_lookup_registered()
    assert config_module.is_installed is is_installed
    assert package_utils.get_installed_path is get_installed_path
    assert utils_module.get_installed_path is get_installed_path
    assert hub_module.get_installed_path is get_installed_path
    # Idempotent, and a function someone else installed is left alone.
    other = lambda package: True  # noqa: E731
    monkeypatch.setattr(utils_module, 'is_installed', other)
    assert register_package_lookup(force=True) is True
    assert utils_module.is_installed is other


TOOLS = sorted(
    glob.glob(osp.join(osp.dirname(osp.dirname(osp.dirname(
        osp.abspath(__file__)))), 'tools', '**', '*.py'), recursive=True))


@pytest.mark.parametrize('tool', TOOLS, ids=osp.basename)
def test_every_tool_imports_mmekd_before_reading_configs(tool):
    # The lookup is installed by `import mmekd`: a tool that reads a config
    # must import mmekd at module level (before its main() parses it).
    tree = ast.parse(open(tool).read())
    top_level = {
        alias.name.split('.')[0]
        for node in tree.body if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split('.')[0]
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module
    }
    reads_configs = any(
        isinstance(node, ast.Attribute) and node.attr in ('fromfile', )
        or isinstance(node, ast.Name) and node.id in ('Config', 'load_config')
        for node in ast.walk(tree))
    if reads_configs:
        assert 'mmekd' in top_level, tool
    else:  # it hands configs to tools/train.py (reproduce_cifar100.py)
        assert 'mmekd' in top_level or "'train.py'" in open(tool).read(), tool

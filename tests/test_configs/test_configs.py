# Copyright (c) mmekd contributors. All rights reserved.
"""Every shipped config parses and builds its model; DDNN configs have the
nets their names promise."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import mmekd  # noqa: F401
from mmekd.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)

EXPECTED_NETS = {
    'ddnn_r34_cifar100.py': [[3, 4, 6, 3], [2, 2, 2, 2]],
    'ddnn_r50_cifar100.py': [[3, 4, 6, 3], [2, 2, 2, 2], [3, 4, 4, 3]],
    'ddnn_r34_imagenet.py': [[3, 4, 6, 3], [2, 2, 2, 2]],
    'ddnn_r50_imagenet.py': [[3, 4, 6, 3], [2, 2, 2, 2], [3, 4, 4, 3]],
    'ddnn_demo_digits.py': [[3, 4, 6, 3], [2, 2, 2, 2], [1, 1, 1, 1]],
    'ddnn_from_mmpretrain_resnet34_cifar10.py': [[3, 4, 6, 3], [2, 2, 2, 2]],
    'ddnn_convnext-small_in1k.py': [[3, 3, 27, 3], [3, 3, 9, 3]],
    'ddnn_swin-small_in1k.py': [[2, 2, 18, 2], [2, 2, 6, 2]],
    'ddnn_deit-small_in1k.py': [[12], [6], [9]],
}


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_config_builds(path):
    cfg = Config.fromfile(path)
    model_cfg = dict(cfg.model)
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = MODELS.build(model_cfg)
    name = osp.basename(path)
    if name in EXPECTED_NETS:
        backbone = model.backbone
        assert [backbone.blocks_per_stage(n)
                for n in backbone.net_names] == EXPECTED_NETS[name]
        assert cfg.val_evaluator['type'] == 'mmekd.MultiNetAccuracy'
    if 'cifar' in name or 'digits' in name:
        size = 16 if 'digits' in name else 32
        model.eval()
        with torch.no_grad():
            out = model(torch.rand(2, 3, size, size))
        assert out.shape == (2, cfg.model.head.num_classes)


def test_baselines_match_ddnn_recipes():
    """A baseline trains its net with exactly the DDNN config's recipe."""
    recipes = {
        'ddnn_r34_cifar100.py': ['resnet18_cifar100', 'resnet34_cifar100'],
        'ddnn_r50_cifar100.py':
        ['resnet26b_cifar100', 'resnet44b_cifar100', 'resnet50_cifar100'],
        'ddnn_r34_imagenet.py': ['resnet18_imagenet', 'resnet34_imagenet'],
        'ddnn_r50_imagenet.py':
        ['resnet26b_imagenet', 'resnet44b_imagenet', 'resnet50_imagenet'],
    }
    for ddnn, baselines in recipes.items():
        ref = Config.fromfile(osp.join(ROOT, 'configs', ddnn))
        for b in baselines:
            cfg = Config.fromfile(
                osp.join(ROOT, 'configs', 'baselines', b + '.py'))
            for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                        'train_dataloader', 'data_preprocessor'):
                assert cfg[key] == ref[key], (b, key)

# Copyright (c) mmekd contributors. All rights reserved.
"""Every shipped config parses and builds its model; DDNN configs have the
nets their names promise."""
import glob
import inspect
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmpretrain.structures import DataSample

import mmekd  # noqa: F401
from mmekd.models.plain_net import plain_model_cfg
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
    'ddnn_convnext_demo_digits.py': [[2, 2, 6, 2], [2, 2, 2, 2]],
    'ddnn_swin_demo_digits.py': [[2, 2, 6, 2], [2, 2, 2, 2]],
    'ddnn_vit_demo_digits.py': [[8], [4], [6]],
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
        **{ddnn: list(nets) for ddnn, nets in FAMILY_BASELINES.items()},
    }
    for ddnn, baselines in recipes.items():
        ref = Config.fromfile(osp.join(ROOT, 'configs', ddnn))
        for b in baselines:
            cfg = Config.fromfile(
                osp.join(ROOT, 'configs', 'baselines', b + '.py'))
            for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                        'train_dataloader', 'data_preprocessor'):
                assert cfg[key] == ref[key], (b, key)
            # A stock recipe's custom hooks (ConvNeXt's EMAHook) too.
            assert cfg.get('custom_hooks') == ref.get('custom_hooks'), b


# The family configs on MMPretrain's recipes: baseline -> the net it is.
FAMILY_BASELINES = {
    'ddnn_convnext-small_in1k.py': {
        'convnext-small_convnext-small-recipe_in1k': 'full',
        'convnext-tiny_convnext-small-recipe_in1k': 'sub0'},
    'ddnn_swin-small_in1k.py': {
        'swin-small_swin-small-recipe_in1k': 'full',
        'swin-tiny_swin-small-recipe_in1k': 'sub0'},
    'ddnn_deit-small_in1k.py': {
        'deit-small_deit-small-recipe_in1k': 'full',
        'vit-6l_deit-small-recipe_in1k': 'sub0',
        'vit-9l_deit-small-recipe_in1k': 'sub1'},
}


def with_defaults(backbone: dict) -> dict:
    """A stock backbone config with its class's defaults filled in."""
    cls = MMPRETRAIN_MODELS.get(backbone['type'])
    defaults = {
        k: p.default
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **{k: v for k, v in backbone.items()
                           if k != '_scope_'}}


@pytest.mark.parametrize('ddnn', FAMILY_BASELINES)
def test_family_baselines_are_the_exported_nets(ddnn):
    """A family baseline's backbone is what the DDNN's net exports to
    (stock class, arch, drop path rate, sizes), and its model is the
    recipe's stock classifier otherwise."""
    ref = Config.fromfile(osp.join(ROOT, 'configs', ddnn))
    model = MODELS.build(dict(ref.model))
    for b, net in FAMILY_BASELINES[ddnn].items():
        cfg = Config.fromfile(
            osp.join(ROOT, 'configs', 'baselines', b + '.py'))
        plain = plain_model_cfg(model, net, ref.model)
        want, got = (with_defaults(c) for c in (plain['backbone'],
                                                  cfg.model.backbone))
        assert got == want, b
        assert cfg.model.type == 'ImageClassifier'
        assert cfg.model.head.num_classes == ref.model.head.num_classes
        assert cfg.model.train_cfg == ref.model.train_cfg, b  # Mixup/CutMix


@pytest.mark.parametrize('name', ['ddnn_convnext_demo_digits.py',
                                  'ddnn_swin_demo_digits.py',
                                  'ddnn_vit_demo_digits.py'])
def test_family_demo_trains_one_step(name):
    """A family demo's model and optimizer (AdamW, its paramwise keys)
    train one step of every net on a 16x16 batch: every loss term, every
    weight moves."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(cfg.model,
                                  data_preprocessor=cfg.data_preprocessor))
        model.init_weights()
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    gen = torch.Generator().manual_seed(0)
    data = dict(
        inputs=torch.randint(0, 256, (4, 3, 16, 16), generator=gen,
                             dtype=torch.uint8),
        data_samples=[DataSample().set_gt_label(i) for i in range(4)])
    before = [p.detach().clone() for p in model.parameters()]
    log_vars = model.train_step(data, wrapper)
    subs = model.backbone.sub_net_names
    assert set(log_vars) == {'loss', 'loss_ce_full'} | {
        f'loss_{t}_{s}' for s in subs for t in ('ce', 'kl', 'at')}
    assert all(torch.isfinite(v) for v in log_vars.values())
    # The shared classifier and norms included; only a ConvNeXt layer
    # scale's zero gradient (blocks the identity at 1e-6) may stay put.
    moved = [not torch.equal(a, p) for a, p in zip(before,
                                                   model.parameters())]
    assert sum(moved) >= 0.9 * len(moved), (sum(moved), len(moved))

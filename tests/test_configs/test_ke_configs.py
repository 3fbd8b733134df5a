# Copyright (c) mmekd contributors. All rights reserved.
"""The Knowledge Evolution configs: the paper recipe starts from the
official initialisation; every KE config sets its generations in one place."""
import glob
import math
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import mmekd  # noqa: F401
from mmekd.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
KE_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'ke', '*.py')))


def test_paper_recipe_uses_official_init():
    """Kaiming-normal fan-in (ReLU gain) for every conv and the fc, BN
    weight 1 everywhere (no zero-init residual), biases 0."""
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'ke',
                 'ke_resnet18_kels-s0.5_10x200e_flowers102.py'))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(2 / fan_in)
            got = m.weight.std().item()
            # ~n^-1/2 relative sampling error; the stem has 9,408 weights.
            assert abs(got / std - 1) < 0.05, (name, got, std)
        elif isinstance(m, torch.nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all(), name
    assert model.backbone.conv1.weight.std().item() == pytest.approx(
        0.1167, rel=0.03)  # the official stem; MMPretrain's default: 0.0255
    assert (model.head.fc.bias == 0).all()


@pytest.mark.parametrize('path', KE_CONFIGS, ids=osp.basename)
def test_generations_set_once(path):
    """No shorthand fields, no run length or schedule outside the hook."""
    cfg = Config.fromfile(path)
    assert not [k for k in cfg if k.startswith('ke_')]
    assert cfg.train_cfg.type == 'mmekd.KnowledgeEvolutionTrainLoop'
    assert 'max_epochs' not in cfg.train_cfg
    assert cfg.get('param_scheduler') is None
    hooks = [h for h in cfg.custom_hooks
             if h.type == 'mmekd.KnowledgeEvolutionHook']
    assert len(hooks) == 1 and hooks[0].generation_schedule


def test_shrinking_with_shorthand_fields_is_refused(tmp_path):
    """The old trap, from the command line: ``--cfg-options ke_generations=2
    ke_epochs=1`` stops before training and names the hook's fields."""
    import subprocess
    import sys
    res = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
         osp.join(ROOT, 'configs', 'ke',
                  'ke_ddnn-ekd_resnet34-w16_kels-s0.5_3x4e_digits.py'),
         '--work-dir', str(tmp_path), '--cfg-options', 'ke_generations=2',
         'ke_epochs=1'],
        capture_output=True, text=True, cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode != 0
    assert ("config fields ['ke_epochs', 'ke_generations'] are not read by "
            'anything') in res.stderr
    assert '--cfg-options custom_hooks.0.num_generations=2' in res.stderr
    assert not glob.glob(str(tmp_path / '*.pth'))

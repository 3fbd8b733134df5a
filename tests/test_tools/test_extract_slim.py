# Copyright (c) mmekd contributors. All rights reserved.
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmekd  # noqa: F401
from mmekd.models.utils import KESplit, extract_slim, reset_hypothesis_
from mmekd.registry import MODELS

init_default_scope('mmpretrain')
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def build(backbone, num_classes=7, in_channels=512):
    cfg = dict(
        type='ImageClassifier',
        backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=in_channels))
    model = MODELS.build(cfg)
    model.init_weights()
    for m in model.modules():  # non-trivial BN statistics and affine
        if isinstance(m, torch.nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean, m.running_var):
                t.data.uniform_(0.5, 1.5)
    return cfg, model


@pytest.mark.parametrize('backbone,in_channels,rate,size', [
    (dict(type='ResNet', depth=18), 512, 0.5, 64),
    (dict(type='ResNet_CIFAR', depth=18, base_channels=16), 128, 0.8, 32),
    (dict(type='ResNet', depth=50, base_channels=16), 512, 0.8, 64),
])
def test_slim_logits_equal_dense_when_reset_is_zero(backbone, in_channels,
                                                    rate, size):
    cfg, dense = build(backbone, in_channels=in_channels)
    split = KESplit.from_model(dense, 'kels', rate, seed=0)
    x = torch.rand(2, 3, size, size)
    _, slim = extract_slim(dense.eval(), cfg, rate)
    with torch.no_grad():
        before = dense(x)
        # Without zeroing, the reset hypothesis changes the dense logits.
        assert not torch.allclose(before, slim(x), atol=1e-3)
        reset_hypothesis_(dense, split, torch.Generator(),
                          dict(type='constant', val=0.))
        _, slim = extract_slim(dense, cfg, rate)
        torch.testing.assert_close(slim(x), dense(x), rtol=1e-4, atol=1e-5)
    assert slim.head.fc.weight.shape == (7, split.layers['head.fc']['keep'][1])


def test_unsupported_model_refused():
    cfg = dict(
        type='mmekd.DDNNClassifier',
        backbone=dict(type='mmekd.DepthDynamicResNetCIFAR', depth=18,
                      sub_depths=[[1, 1, 1, 1]]),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='mmekd.MultiNetClsHead', num_classes=10,
                  in_channels=512))
    with pytest.raises(TypeError, match='model is DDNNClassifier'):
        extract_slim(MODELS.build(cfg), cfg, 0.5)
    cfg, dense = build(dict(type='ResNetV1c', depth=18))
    with pytest.raises(TypeError, match='backbone is ResNetV1c'):
        extract_slim(dense, cfg, 0.5)


def test_extract_slim_tool(tmp_path, capfd):
    """The tool writes a config + checkpoint that the test runner runs, and
    prints dense vs slim FLOPs."""
    sys.path.insert(0, osp.join(ROOT, 'tests', 'test_engine', 'test_hooks'))
    from test_knowledge_evolution_hook import runner_cfg  # registers data
    cfg = runner_cfg(str(tmp_path), gens=1, epochs=2)
    cfg_path = str(tmp_path / 'dense.py')
    cfg.dump(cfg_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    out = str(tmp_path / 'slim')
    ckpt = str(tmp_path / 'generation_1.pth')
    # In-process (the tiny dataset is registered here), as tools/test.py.
    from importlib import import_module
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    tool = import_module('extract_slim')
    sys.argv = ['extract_slim.py', cfg_path, ckpt, out, '--shape', '8']
    capfd.readouterr()
    tool.main()
    printed = ''.join(capfd.readouterr())
    # The FLOP counter's list of ops it does not count stays off.
    assert 'FLOPs' in printed and 'Unsupported operator' not in printed
    slim_cfg = Config.fromfile(osp.join(out, 'slim_config.py'))
    assert slim_cfg.model.backbone.type == 'mmekd.SlimResNetCIFAR'
    assert slim_cfg.model.backbone.out_channels == [4, 8, 16, 32]
    assert slim_cfg.model.head.in_channels == 32
    slim_cfg.work_dir = str(tmp_path / 'test')
    slim_cfg.load_from = osp.join(out, 'slim.pth')
    slim_cfg.test_dataloader = slim_cfg.val_dataloader
    slim_cfg.test_evaluator = slim_cfg.val_evaluator
    slim_cfg.test_cfg = dict()
    slim_cfg.experiment_name = 'slim_test'
    metrics = Runner.from_cfg(slim_cfg).test()
    hook = [h for h in runner.hooks if hasattr(h, 'history')][0]
    assert metrics['accuracy/top1'] == pytest.approx(
        hook.history[0]['slim/accuracy/top1'])
    # A WELS checkpoint has no slim network.
    state = torch.load(ckpt, weights_only=False)
    state['knowledge_evolution']['split']['mode'] = 'wels'
    torch.save(state, str(tmp_path / 'wels.pth'))
    res = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'extract_slim.py'),
         cfg_path, str(tmp_path / 'wels.pth'), out],
        capture_output=True, text=True, cwd=ROOT)
    assert res.returncode != 0 and 'only a KELS split' in res.stderr

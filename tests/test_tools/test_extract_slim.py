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
from mmekd.models.ke import KESplit, extract_slim, reset_hypothesis_
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
    with pytest.raises(TypeError, match=r"pass net, one of \['full', "
                       r"'sub0'\]"):
        extract_slim(MODELS.build(cfg), cfg, 0.5)
    with pytest.raises(TypeError, match="unknown net 'sub3'"):
        extract_slim(MODELS.build(cfg), cfg, 0.5, net='sub3')
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
    # Widths 4/8/16/32 are a stock ResNet's: plain MMPretrain.
    assert slim_cfg.model.backbone.type == 'ResNet_CIFAR'
    assert (slim_cfg.model.backbone.stem_channels,
            slim_cfg.model.backbone.base_channels) == (4, 4)
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


# ---------------------------------------------------------------------- #
# DDNN: one slim network per net
# ---------------------------------------------------------------------- #
sys.path.insert(0, osp.join(ROOT, 'tests', 'test_apis'))
from tiny_ddnn import randomize, tiny_model_files  # noqa: E402


def ddnn(private_norm, private_fc):
    cfg = dict(
        type='mmekd.DDNNClassifier',
        data_preprocessor=dict(num_classes=5, mean=[120.] * 3,
                               std=[60.] * 3),
        backbone=dict(type='mmekd.DepthDynamicResNetCIFAR', depth=34,
                      stem_channels=8, base_channels=8,
                      sub_depths=[[2, 2, 2, 2], [1, 2, 1, 1]],
                      private_norm=private_norm),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='mmekd.MultiNetClsHead', num_classes=5,
                  in_channels=64, private_fc=private_fc))
    return cfg, randomize(MODELS.build(cfg)).eval()


@pytest.mark.parametrize('private_norm,private_fc', [('stats', False),
                                                     (True, True),
                                                     (False, False)])
def test_ddnn_slim_logits_equal_masked_dense(private_norm, private_fc):
    """Every net's slim network computes that net's logits of the dense
    DDNN whose reset hypothesis is zero (its own BN statistics, its own
    classifier)."""
    cfg, model = ddnn(private_norm, private_fc)
    split = KESplit.from_model(model, 'kels', 0.5, seed=0)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model.forward_nets(x)[0]
        _, slim = extract_slim(model, cfg, 0.5, 'sub1')
        assert not torch.allclose(slim(x), before['sub1'], atol=1e-3)
        reset_hypothesis_(model, split, torch.Generator(),
                          dict(type='constant', val=0.))
        logits = model.forward_nets(x)[0]
        types = {}
        for net in ('full', 'sub0', 'sub1'):
            slim_cfg, slim = extract_slim(model, cfg, 0.5, net)
            types[net] = slim_cfg['backbone']['type']
            torch.testing.assert_close(slim(x), logits[net], rtol=1e-4,
                                       atol=1e-5)
        # The nets differ, so each slim net matched its own net.
        assert not torch.allclose(logits['sub0'], logits['sub1'], atol=1e-3)
    assert types == dict(full='ResNet_CIFAR', sub0='ResNet_CIFAR',
                         sub1='mmekd.SlimResNetCIFAR')
    assert slim.backbone.stage_blocks == (1, 2, 1, 1)


@pytest.mark.parametrize('net,backbone', [('sub0', 'ResNet_CIFAR'),
                                          ('sub1', 'mmekd.SlimResNetCIFAR')])
def test_extract_slim_tool_ddnn_net_then_onnx(tmp_path, monkeypatch, net,
                                              backbone):
    """``--net``: a plain config + weights-only checkpoint of that net's
    slim network, equal to the in-memory one; it exports to ONNX."""
    import numpy as np
    from mmengine.registry import DefaultScope
    from tool_loader import load_tool

    from mmekd.apis import onnx_logits
    cfg_path, ckpt, model = tiny_model_files(tmp_path, private_norm='stats')
    out = str(tmp_path / 'slim')
    tool = load_tool('extract_slim')
    onnx_file = str(tmp_path / f'{net}.onnx')
    monkeypatch.setattr(sys, 'argv', [
        'extract_slim.py', cfg_path, ckpt, out, '--net', net,
        '--split-rate', '0.5', '--shape', '16', '--onnx', onnx_file])
    tool.main()
    slim_cfg = Config.fromfile(osp.join(out, 'slim_config.py'))
    assert slim_cfg.model.type == 'ImageClassifier'
    assert slim_cfg.model.backbone.type == backbone
    assert slim_cfg.test_evaluator.type == 'Accuracy'
    state = torch.load(osp.join(out, 'slim.pth'), weights_only=True)
    assert state['meta']['mmekd_export']['net'] == net
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        slim = MODELS.build(slim_cfg.model)
    slim.load_state_dict(state['state_dict'])
    slim.eval()
    _, expected = extract_slim(model.eval(), Config.fromfile(cfg_path).model,
                               0.5, net)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(slim(x), expected(x), rtol=0, atol=0)
    with torch.no_grad():  # the tool's ONNX file, other inputs
        np.testing.assert_allclose(onnx_logits(onnx_file, x),
                                   slim(x).numpy(), rtol=0, atol=1e-4)
    # A DDNN checkpoint without --net is refused, naming the nets.
    monkeypatch.setattr(sys, 'argv', [
        'extract_slim.py', cfg_path, ckpt, out, '--split-rate', '0.5'])
    with pytest.raises(SystemExit, match=r"pass --net, one of \['full', "
                       r"'sub0', 'sub1'\]"):
        tool.main()

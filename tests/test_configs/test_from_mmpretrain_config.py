# Copyright (c) mmekd contributors. All rights reserved.
"""configs/ddnn_from_mmpretrain_resnet34_cifar10.py: a stock MMPretrain
config (``mmpretrain::``) turned into a DDNN run, built and trained."""
import math
import os
import os.path as osp
import pickle
import subprocess
import sys

import mmpretrain
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mmekd  # noqa: F401  (registers the mmpretrain:: package lookup)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'ddnn_from_mmpretrain_resnet34_cifar10.py')
STOCK = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs',
                 'resnet', 'resnet34_8xb16_cifar10.py')


def write_fake_cifar10(root, per_class=1):
    """A CIFAR-10 folder in the standard ``cifar-10-batches-py`` layout."""
    folder = osp.join(root, 'cifar-10-batches-py')
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = [c for _ in range(per_class) for c in range(10)]
    batch = dict(
        data=rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8),
        labels=labels)
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        with open(osp.join(folder, name), 'wb') as f:
            pickle.dump(batch, f)
    with open(osp.join(folder, 'batches.meta'), 'wb') as f:
        pickle.dump(dict(label_names=[f'c{i}' for i in range(10)]), f)
    return root


def without_scope(obj):
    """A config value without the ``_scope_`` keys a ``::`` base adds."""
    if isinstance(obj, dict):
        return {k: without_scope(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return [without_scope(v) for v in obj]
    return obj


def check_safety_hooks(cfg: Config, stock: Config) -> None:
    """``cfg`` has the stock config's hooks with the same arguments, with
    mmekd's safe checkpoint type and its resume hooks added."""
    hooks, stock_hooks = (without_scope(c.default_hooks) for c in (cfg, stock))
    assert hooks.pop('checkpoint') == dict(
        stock_hooks.pop('checkpoint'), type='mmekd.AtomicCheckpointHook')
    assert hooks.pop('exact_resume') == dict(type='mmekd.ExactResumeHook')
    assert hooks.pop('preemption') == dict(
        type='mmekd.PreemptionCheckpointHook')
    assert hooks == stock_hooks


@pytest.fixture
def cifar10(tmp_path, monkeypatch):
    root = write_fake_cifar10(str(tmp_path / 'cifar10'))
    monkeypatch.setenv('CIFAR10_ROOT', root)
    return root


def test_keeps_the_stock_recipe(cifar10):
    cfg, stock = Config.fromfile(CONFIG), Config.fromfile(STOCK)
    for key in ('param_scheduler', 'train_cfg', 'data_preprocessor'):
        assert without_scope(cfg[key]) == without_scope(stock[key]), key
    # the same optimizer, in the wrapper the memory-efficient step needs
    assert cfg.optim_wrapper.type == 'mmekd.SafeOptimWrapper'
    assert without_scope({**cfg.optim_wrapper, 'type': None}) == \
        without_scope({**stock.optim_wrapper, 'type': None})
    # under torchrun, the DDNN's DDP wrapper (the memory-efficient step)
    assert cfg.model_wrapper_cfg == dict(
        type='mmekd.DDNNDistributedDataParallel')
    assert 'model_wrapper_cfg' not in stock
    check_safety_hooks(cfg, stock)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[key].dataset.type == 'mmekd.CIFAR10'
        assert cfg[key].dataset.data_root == cifar10
        assert cfg[key].dataset.pipeline == stock[key].dataset.pipeline
        assert cfg[key].dataset.split == stock[key].dataset.split
    assert cfg.model.backbone.depth == 34
    assert cfg.model.head.num_classes == 10


def test_trains_one_iteration(cifar10, tmp_path):
    cfg = Config.fromfile(CONFIG)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_dataloader.update(batch_size=4, num_workers=0,
                                persistent_workers=False)
    cfg.train_dataloader.dataset.indices = 4
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=100)
    cfg.default_hooks.logger.interval = 1
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    assert runner.iter == 1
    assert [runner.model.backbone.blocks_per_stage(n)
            for n in runner.model.backbone.net_names] == [[3, 4, 6, 3],
                                                          [2, 2, 2, 2]]
    hub = runner.message_hub
    # Every term of DDNN + EKD is computed. (MMPretrain's ResNet starts
    # with zero-initialised residual branches, so at iteration 1 the sub-net
    # computes what the full net does and the distillation terms are 0.)
    for key in ('loss_ce_full', 'loss_ce_sub0', 'loss_kl_sub0',
                'loss_at_sub0'):
        value = hub.get_scalar(f'train/{key}').current()
        assert math.isfinite(value) and value >= 0, key
    assert hub.get_scalar('train/loss_ce_sub0').current() > 2.0  # ~ln 10
    after = runner.model.state_dict()
    for key in ('backbone.conv1.weight', 'backbone.layer4.2.conv2.weight',
                'head.fc.weight'):
        assert not torch.equal(before[key], after[key]), key


@pytest.mark.slow
def test_train_tool_resolves_the_stock_base(cifar10, tmp_path):
    # tools/train.py, as a user runs it: the mmpretrain:: base resolves
    # without pkg_resources, one iteration trains and the per-net table
    # prints.
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), CONFIG,
         '--work-dir', str(tmp_path / 'work'), '--cfg-options',
         'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0',
         'train_dataloader.dataset.indices=4', 'val_dataloader.num_workers=0',
         'train_cfg.max_epochs=1', 'train_cfg.val_interval=1'],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')
    for net in ('full', 'sub0'):
        assert f'| {net} |' in proc.stdout, proc.stdout[-2000:]

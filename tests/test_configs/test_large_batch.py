# Copyright (c) mmekd contributors. All rights reserved.
"""configs/ddnn_r34_cifar100_bs1024.py (docs/large_batch.md): linear LR
scaling from batch 128, a 5-epoch linear warm-up, the recipe's steps at
epochs 60/120/160; a few real iterations at batch 512 with a tiny net."""
import math
import os.path as osp
import sys
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from tool_loader import REPO, load_tool

sys.path.insert(0, osp.join(REPO, 'tests', 'test_datasets'))
from test_cifar import write_fake_cifar100  # noqa: E402

CONFIG = osp.join(REPO, 'configs', 'ddnn_r34_cifar100_bs1024.py')
# Tiny nets: CIFAR ResNet-34 > ResNet-18 with 4 base channels.
TINY = [
    'model.backbone.stem_channels=4', 'model.backbone.base_channels=4',
    'model.head.in_channels=32', 'train_dataloader.num_workers=0',
    'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
    'train_dataloader.dataset.dataset.val_per_class=1',
    'val_dataloader.dataset.val_per_class=1'
]


@pytest.fixture
def cifar100(tmp_path, monkeypatch):
    """12 images per class, the last one held out: 1,100 training images,
    2 iterations per epoch at batch 1024 or 1000 (3 at 512)."""
    root = write_fake_cifar100(str(tmp_path / 'cifar100'), per_class=12)
    monkeypatch.setenv('CIFAR100_ROOT', root)
    return root


def load(tmp_path, *options, auto_scale_lr=False):
    """The config as tools/train.py makes it from these command-line
    options (``--cfg-options TINY + options``)."""
    train = load_tool('train')
    argv = ['train.py', CONFIG, '--work-dir', str(tmp_path / 'work')]
    if auto_scale_lr:
        argv.append('--auto-scale-lr')
    argv += ['--cfg-options'] + TINY + list(options)
    old, sys.argv = sys.argv, argv
    try:
        args = train.parse_args()
    finally:
        sys.argv = old
    return train.merge_args(Config.fromfile(CONFIG), args)


def scaled_lrs(runner):
    """Build the optimizer wrapper and scale its LR, as ``Runner.train``
    does."""
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.scale_lr(runner.optim_wrapper, runner.auto_scale_lr)
    return sorted(
        {g['lr'] for g in runner.optim_wrapper.optimizer.param_groups})


def test_recipe():
    cfg = Config.fromfile(CONFIG)
    assert cfg.train_dataloader.batch_size == 1024
    assert cfg.auto_scale_lr == dict(base_batch_size=128, enable=True)
    assert cfg.optim_wrapper.optimizer == dict(
        type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4)
    assert cfg.optim_wrapper.constructor == \
        'mmekd.FusedOptimWrapperConstructor'
    assert cfg.train_cfg.max_epochs == 200
    assert cfg.train_dataloader.dataset.type == 'mmekd.InMemoryBatchDataset'
    assert cfg.data_preprocessor.type == 'mmekd.GPUAugmentPreprocessor'


@pytest.mark.parametrize('options,lr', [
    ((), 0.8),
    (('train_dataloader.batch_size=512', ), 0.4),
])
def test_lr_is_scaled_from_batch_128(tmp_path, options, lr):
    runner = Runner.from_cfg(load(tmp_path, *options))
    assert scaled_lrs(runner) == pytest.approx([lr])
    # Built in train(), after the model was moved to its device: fused SGD.
    assert runner.optim_wrapper.optimizer.defaults['fused'] is True


def test_lr_is_scaled_by_the_total_batch(tmp_path):
    """8 GPUs x 128 per GPU is the batch auto_scale_lr sees: lr 0.8."""
    runner = Runner.from_cfg(
        load(tmp_path, 'train_dataloader.batch_size=128'))
    runner._world_size = 8
    assert scaled_lrs(runner) == pytest.approx([0.8])


def test_auto_scale_lr_flag_on_the_stock_schedule(tmp_path):
    """The batch-128 recipe itself scales only with --auto-scale-lr."""
    base = osp.join(REPO, 'configs', 'ddnn_r34_cifar100.py')
    cfg = Config.fromfile(base)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.merge_from_dict({
        'train_dataloader.batch_size': 512,
        'model.backbone.stem_channels': 4,
        'model.backbone.base_channels': 4,
        'model.head.in_channels': 32
    })
    assert scaled_lrs(Runner.from_cfg(cfg.copy())) == pytest.approx([0.1])
    cfg.auto_scale_lr.enable = True  # what --auto-scale-lr sets
    assert scaled_lrs(Runner.from_cfg(cfg)) == pytest.approx([0.4])


def lr_per_iteration(runner, epochs):
    """The LR of every iteration of the first ``epochs`` epochs, stepping
    the schedulers as ParamSchedulerHook does."""
    scaled_lrs(runner)
    runner.param_schedulers = runner.build_param_scheduler(
        runner.param_schedulers)
    optimizer = runner.optim_wrapper.optimizer
    per_epoch = len(runner.train_dataloader)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # scheduler.step without a step
        for _ in range(epochs):
            for _ in range(per_epoch):
                lrs.append(optimizer.param_groups[0]['lr'])
                for s in runner.param_schedulers:
                    if not s.by_epoch:
                        s.step()
            for s in runner.param_schedulers:
                if s.by_epoch:
                    s.step()
    return per_epoch, lrs


def test_warmup_then_the_recipe_steps(tmp_path, cifar100):
    runner = Runner.from_cfg(load(tmp_path))
    per_epoch, lrs = lr_per_iteration(runner, 200)
    assert per_epoch == 2  # 1,100 images at 1024
    warmup = 5 * per_epoch  # iterations
    # Iteration 0: the batch-128 LR; the scaled LR at the last warm-up
    # iteration, linear in between.
    assert lrs[0] == pytest.approx(0.1)
    for i in range(warmup):
        assert lrs[i] == pytest.approx(0.1 + 0.7 * i / (warmup - 1)), i
    assert lrs[warmup - 1] == pytest.approx(0.8)

    def at_epoch(e):
        return sorted(set(lrs[e * per_epoch:(e + 1) * per_epoch]))

    # Then the recipe's schedule: x0.2 at epochs 60, 120 and 160.
    for e, lr in [(5, 0.8), (59, 0.8), (60, 0.16), (119, 0.16),
                  (120, 0.032), (159, 0.032), (160, 0.0064),
                  (199, 0.0064)]:
        assert at_epoch(e) == pytest.approx([lr]), e


def test_warmup_at_batch_512(tmp_path, cifar100):
    runner = Runner.from_cfg(
        load(tmp_path, 'train_dataloader.batch_size=512'))
    per_epoch, lrs = lr_per_iteration(runner, 6)
    assert per_epoch == 3
    # start_factor 1/8 of the scaled 0.4 (docs/large_batch.md: set
    # param_scheduler.0.start_factor=0.25 to start from 0.1 at 512).
    assert lrs[0] == pytest.approx(0.05)
    assert lrs[5 * per_epoch - 1] == pytest.approx(0.4)
    assert lrs[5 * per_epoch] == pytest.approx(0.4)


def test_trains_at_batch_512(tmp_path, cifar100):
    """A few real iterations at batch 512 (tiny nets, fake CIFAR-100)."""
    cfg = load(tmp_path, 'train_dataloader.batch_size=512',
               'train_cfg.max_epochs=1', 'train_cfg.val_interval=100',
               'default_hooks.logger.interval=1')
    torch.manual_seed(0)
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    assert runner.iter == 3  # 512 + 512 + 76 images
    assert runner.optim_wrapper.optimizer.defaults['fused'] is True
    hub = runner.message_hub
    for key in ('loss_ce_full', 'loss_ce_sub0', 'loss_kl_sub0'):
        value = hub.get_scalar(f'train/{key}').current()
        assert math.isfinite(value) and value >= 0, key
    # Warm-up: 3 of its 15 iterations done, the LR rose from 0.05.
    lr = runner.optim_wrapper.optimizer.param_groups[0]['lr']
    assert lr == pytest.approx(0.05 + 0.35 * 3 / 14)
    after = runner.model.state_dict()
    for key in ('backbone.conv1.weight', 'head.fc.weight'):
        assert not torch.equal(before[key], after[key]), key

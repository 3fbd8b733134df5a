# Copyright (c) mmekd contributors. All rights reserved.
import copy
import math
import os.path as osp
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.datasets import BaseDataset

import mmekd  # noqa: F401
from mmekd.engine import KnowledgeEvolutionHook
from mmekd.models.utils import KESplit, keep_count, reset_hypothesis_
from mmekd.registry import DATASETS, MODELS
from mmekd.utils import safe_load

init_default_scope('mmpretrain')


@DATASETS.register_module(force=True)
class KETinyDataset(BaseDataset):
    """4 classes of 8x8 noise images with a class-dependent mean."""
    METAINFO = dict(classes=['a', 'b', 'c', 'd'])

    def __init__(self, num: int = 32, seed: int = 0, **kwargs):
        self.num, self.seed = num, seed
        super().__init__(ann_file='', **kwargs)

    def load_data_list(self):
        rng = np.random.RandomState(self.seed)
        return [
            dict(
                img=(rng.randint(0, 120, (8, 8, 3)) + 40 * (i % 4)).astype(
                    np.uint8),
                gt_label=i % 4) for i in range(self.num)
        ]


def tiny_model_cfg(num_classes=4):
    return dict(
        type='ImageClassifier',
        data_preprocessor=dict(
            num_classes=num_classes, mean=[128.] * 3, std=[64.] * 3),
        backbone=dict(
            type='ResNet_CIFAR', depth=18, stem_channels=8,
            base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead', num_classes=num_classes, in_channels=64))


def runner_cfg(work_dir, gens=3, epochs=3, resume_from=None, **hook_kwargs):
    loader = dict(
        batch_size=8, num_workers=0, persistent_workers=False,
        dataset=dict(type='mmekd.KETinyDataset',
                     pipeline=[dict(type='PackInputs')]),
        sampler=dict(type='DefaultSampler', shuffle=True))
    scheds = []
    for g in range(gens):
        scheds += [
            dict(type='LinearLR', start_factor=0.25, by_epoch=True,
                 begin=g * epochs, end=g * epochs + 1,
                 convert_to_iter_based=True),
            dict(type='CosineAnnealingLR', eta_min=1e-3, by_epoch=True,
                 begin=g * epochs + 1, end=(g + 1) * epochs),
        ]
    hook = dict(type='mmekd.KnowledgeEvolutionHook', num_generations=gens,
                epochs_per_generation=epochs, split_rate=0.5, seed=7)
    hook.update(hook_kwargs)
    val_loader = copy.deepcopy(loader)
    val_loader['dataset']['seed'] = 1
    val_loader['sampler']['shuffle'] = False
    return Config(dict(
        model=tiny_model_cfg(),
        work_dir=work_dir,
        experiment_name=f'ke_{time.time_ns()}',
        train_dataloader=loader,
        val_dataloader=val_loader,
        val_evaluator=dict(type='Accuracy', topk=(1, )),
        train_cfg=dict(by_epoch=True, max_epochs=gens * epochs,
                       val_interval=100),
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(
            type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4)),
        param_scheduler=scheds,
        custom_hooks=[hook],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        default_scope='mmpretrain',
        log_level='WARNING',
        load_from=resume_from,
        resume=resume_from is not None))


class Recorder(Hook):
    """Records lr per iteration and optimizer-state size per epoch (runs
    after the KE hook)."""
    priority = 'LOWEST'

    def __init__(self):
        self.lrs, self.states = [], []

    def before_train_epoch(self, runner):
        opt = runner.optim_wrapper.optimizer
        self.states.append((runner.epoch, len(opt.state)))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs.append(runner.optim_wrapper.optimizer.param_groups[0]['lr'])


def resnet18(num_classes=102, **kwargs):
    return MODELS.build(
        dict(type='ImageClassifier',
             backbone=dict(type='ResNet', depth=18, **kwargs),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=num_classes,
                       in_channels=512)))


# ---------------------------------------------------------------------- #
# the split
# ---------------------------------------------------------------------- #
def test_kels_keep_counts():
    model = resnet18()
    split = KESplit.from_model(model, 'kels', 0.5, seed=0)
    keep = {n: v['keep'] for n, v in split.layers.items()}
    assert keep['backbone.conv1'] == [32, 3]  # stem: all image channels
    assert keep['backbone.layer1.0.conv1'] == [32, 32]
    assert keep['backbone.layer2.0.conv1'] == [64, 32]
    assert keep['backbone.layer2.0.downsample.0'] == [64, 32]
    assert keep['head.fc'] == [102, 256]  # all classes
    # Mask sizes logged by the paper's code (Aircraft, s=0.5).
    assert split.weight_mask('backbone.conv1').sum() == 4704
    assert split.weight_mask('backbone.layer3.0.downsample.0').sum() == 8192
    assert split.weight_mask('backbone.layer4.1.conv2').sum() == 589824
    mask = split.weight_mask('backbone.layer2.0.conv1')
    assert mask[:64, :32].all() and not mask[64:].any() and \
        not mask[:, 32:].any()
    # s=0.8: ceil per layer, not a uniform multiple.
    keep = {
        n: v['keep']
        for n, v in KESplit.from_model(model, 'kels', 0.8, 0).layers.items()
    }
    assert keep['backbone.conv1'] == [52, 3]
    assert keep['backbone.layer2.0.conv1'] == [103, 52]
    assert keep['backbone.layer4.1.conv2'] == [410, 410]
    assert keep['head.fc'] == [102, 410]
    assert keep_count(0.7, 10) == 7 and keep_count(0.51, 10) == 6


def test_wels_seeded_and_state_roundtrip():
    model = resnet18(num_classes=10)
    a = KESplit.from_model(model, 'wels', 0.3, seed=5)
    b = KESplit.from_model(model, 'wels', 0.3, seed=5)
    c = KESplit.from_model(model, 'wels', 0.3, seed=6)
    name = 'backbone.layer3.0.conv2'
    assert torch.equal(a.weight_mask(name), b.weight_mask(name))
    assert not torch.equal(a.weight_mask(name), c.weight_mask(name))
    assert abs(a.fit_ratio() - 0.3) < 0.01
    assert a.bias_mask('head.fc').shape == (10, )
    # 1 bit per weight in the state, restored exactly.
    state = a.state_dict()
    bits = state['layers'][name]['weight_bits']
    assert bits.dtype == torch.uint8
    assert bits.numel() == math.ceil(256 * 256 * 9 / 8)
    restored = KESplit.from_state_dict(state)
    for n in a.layers:
        assert torch.equal(a.weight_mask(n), restored.weight_mask(n))


@pytest.mark.parametrize('rate', [0, -0.1, 1.5, True, '0.5'])
def test_split_rate_refused(rate):
    with pytest.raises(ValueError, match='split_rate'):
        KESplit.from_model(resnet18(), 'kels', rate, seed=0)
    with pytest.raises(ValueError, match='split_rate'):
        KnowledgeEvolutionHook(2, 2, split_rate=rate)
    with pytest.raises(ValueError, match='split_mode'):
        KnowledgeEvolutionHook(2, 2, split_mode='filter')


def test_unknown_module_error():
    depthwise = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3,
                                                            groups=8))
    with pytest.raises(TypeError, match=r"groups=8.*'1'"):
        KESplit.from_model(depthwise, 'kels', 0.5, 0)
    KESplit.from_model(depthwise, 'wels', 0.5, 0)  # WELS is elementwise

    class Scale(nn.Module):

        def __init__(self):
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(8))

    model = nn.Sequential(nn.Conv2d(3, 8, 3), Scale())
    with pytest.raises(TypeError, match=r"'1' \(Scale\).*gamma"):
        KESplit.from_model(model, 'wels', 0.5, 0)


def test_reset_changes_only_reset_hypothesis():
    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    model.init_weights()
    for m in model.modules():  # non-trivial BN parameters and statistics
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean, m.running_var):
                t.data.uniform_(0.5, 1.5)
    before = copy.deepcopy(model.state_dict())
    split = KESplit.from_model(model, 'kels', 0.5, 0)
    reset_hypothesis_(model, split, torch.Generator().manual_seed(0))
    after = model.state_dict()
    for key, value in before.items():
        name = key.rsplit('.', 1)[0]
        if key.endswith('.weight') and name in split.layers:
            mask = split.weight_mask(name)
            assert torch.equal(after[key][mask], value[mask]), key
            # A re-drawn float32 equals the old value by chance for about
            # 1 element in 10^7 (a reset conv has ~10^5): "all differ"
            # failed now and then with unseeded weights.
            same = (after[key][~mask] == value[~mask]).float().mean()
            assert same < 1e-3, key
            # kaiming-uniform a=sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1 / math.sqrt(value[0].numel())
            assert after[key][~mask].abs().max() <= bound
        else:  # BN parameters and statistics, fc bias
            assert torch.equal(after[key], value), key
    # reset_bias re-draws only the reset part of a bias.
    net = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2))
    split = KESplit.from_model(net, 'kels', 0.5, 0)
    bias = net[0].bias.detach().clone()
    reset_hypothesis_(net, split, torch.Generator().manual_seed(0),
                      reset_bias=True)
    assert torch.equal(net[0].bias[:3], bias[:3])
    assert (net[0].bias[3:] != bias[3:]).all()


# ---------------------------------------------------------------------- #
# the hook in a runner
# ---------------------------------------------------------------------- #
def final_state(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_generations_schedule_and_optimizer_state(tmp_path):
    runner = Runner.from_cfg(runner_cfg(str(tmp_path)))
    recorder = Recorder()
    runner.register_hook(recorder)
    runner.train()
    # Optimizer state (momentum) is empty at the start of every generation.
    assert recorder.states == [(0, 0), (1, 62), (2, 62), (3, 0), (4, 62),
                               (5, 62), (6, 0), (7, 62), (8, 62)]
    # The lr schedule restarts: every generation has the same lrs.
    lrs = np.array(recorder.lrs).reshape(3, -1)
    assert lrs[0, 0] == pytest.approx(0.05 * 0.25)
    np.testing.assert_allclose(lrs[1], lrs[0], rtol=1e-12)
    np.testing.assert_allclose(lrs[2], lrs[0], rtol=1e-12)
    # One checkpoint per generation with the KE state, dense + slim results.
    hook = [h for h in runner.hooks
            if isinstance(h, KnowledgeEvolutionHook)][0]
    assert [h['generation'] for h in hook.history] == [1, 2, 3]
    assert all('dense/accuracy/top1' in h and 'slim/accuracy/top1' in h
               for h in hook.history)
    for g in (1, 2, 3):
        ckpt = safe_load(osp.join(str(tmp_path), f'generation_{g}.pth'))
        assert ckpt['meta']['epoch'] == 3 * g
        state = ckpt['knowledge_evolution']
        assert state['generation'] == g and state['split']['rate'] == 0.5
        assert state['split']['layers']['head.fc']['keep'] == [4, 32]


@pytest.mark.parametrize('resume_epoch', [4, 3])
def test_resume_equals_uninterrupted(tmp_path, resume_epoch):
    """Resume in the middle of generation 2 (epoch 4 of 3x3) and at its
    start (epoch 3): the final weights equal an uninterrupted run's."""
    full = Runner.from_cfg(runner_cfg(str(tmp_path / 'full')))
    full.train()
    expected = final_state(full)
    ckpt = str(tmp_path / 'full' / f'epoch_{resume_epoch}.pth')
    resumed = Runner.from_cfg(
        runner_cfg(str(tmp_path / 'resumed'), resume_from=ckpt, seed=99))
    resumed.train()
    got = final_state(resumed)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    hooks = [[h for h in r.hooks if isinstance(h, KnowledgeEvolutionHook)][0]
             for r in (full, resumed)]
    assert hooks[1].split.seed == 7  # restored, not the config's 99
    assert [h['dense/accuracy/top1'] for h in hooks[1].history] == \
        [h['dense/accuracy/top1'] for h in hooks[0].history]


def test_config_checks(tmp_path):
    cfg = runner_cfg(str(tmp_path))
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True)]
    with pytest.raises(ValueError, match='spans the start of generation 2'):
        Runner.from_cfg(cfg).train()
    cfg = runner_cfg(str(tmp_path / 'b'))
    cfg.train_cfg.max_epochs = 8
    with pytest.raises(ValueError, match='max_epochs is 8'):
        Runner.from_cfg(cfg).train()
    with pytest.raises(ValueError, match='reinit_cfg'):
        KnowledgeEvolutionHook(2, 2, reinit_cfg=dict(type='orthogonal'))
    with pytest.raises(ValueError, match='kels'):
        KnowledgeEvolutionHook(2, 2, split_mode='wels', reset_norm=True)


def test_split_of_ddnn_model():
    """DDNN (private BN copies, private sub-net classifiers) splits too;
    every classifier in the head keeps all classes."""
    model = MODELS.build(dict(
        type='mmekd.DDNNClassifier',
        backbone=dict(type='mmekd.DepthDynamicResNetCIFAR', depth=18,
                      sub_depths=[[1, 1, 1, 1]], private_norm=True),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='mmekd.MultiNetClsHead', num_classes=10,
                  in_channels=512, private_fc=True)))
    split = KESplit.from_model(model, 'kels', 0.5, 0)
    assert split.layers['head.fc']['keep'] == [10, 256]
    assert split.layers['head.sub_fcs.sub0']['keep'] == [10, 256]
    assert split.layers['backbone.conv1']['keep'] == [32, 3]
    before = copy.deepcopy(model.state_dict())
    reset_hypothesis_(model, split, torch.Generator().manual_seed(0))
    key = 'backbone.layer1.0.bn1.sub_norms.sub0.weight'
    assert torch.equal(model.state_dict()[key], before[key])

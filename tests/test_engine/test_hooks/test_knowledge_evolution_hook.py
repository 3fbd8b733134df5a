# Copyright (c) mmekd contributors. All rights reserved.
import copy
import glob
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
from mmekd.models.ke import KESplit, keep_count, reset_hypothesis_
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


GENERATION_SCHEDULE = [
    dict(type='LinearLR', start_factor=0.25, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-3, by_epoch=True, begin=1),
]


def derived_cfg(work_dir, gens=3, epochs=3, **hook_kwargs):
    """The config of :func:`runner_cfg` written the one-source way: the KE
    loop takes the length and the hook the schedule (1-epoch generations:
    the warm-up only)."""
    schedule = GENERATION_SCHEDULE if epochs > 1 else GENERATION_SCHEDULE[:1]
    cfg = runner_cfg(work_dir, gens, epochs, generation_schedule=schedule,
                     **hook_kwargs)
    cfg.param_scheduler = None
    cfg.train_cfg = dict(type='mmekd.KnowledgeEvolutionTrainLoop',
                         val_interval=100)
    return cfg


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


def test_keep_count_is_the_official_ceil():
    """``math.ceil(s * C)`` in floating point, as the official code: over
    s = 0.01..0.99 and C <= 4096, including the 586 pairs where rounding
    ``s * C`` first gives one channel less."""
    differ = 0
    for i in range(1, 100):
        s = i / 100
        for c in range(1, 4097):
            assert keep_count(s, c) == math.ceil(s * c), (s, c)
            differ += keep_count(s, c) != math.ceil(round(s * c, 6))
    assert differ == 586
    assert 0.07 * 100 > 7 and keep_count(0.07, 100) == 8
    assert 0.7 * 10 == 7.0 and keep_count(0.7, 10) == 7
    assert keep_count(0.001, 10) == 1  # never an empty layer


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
    # a wrong type is a TypeError, a wrong value a ValueError
    with pytest.raises((TypeError, ValueError), match='split_rate'):
        KESplit.from_model(resnet18(), 'kels', rate, seed=0)
    with pytest.raises((TypeError, ValueError), match='split_rate'):
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


@pytest.mark.parametrize('resume_epoch,make_cfg', [(4, runner_cfg),
                                                    (3, derived_cfg)],
                         ids=['mid-generation', 'generation-start-derived'])
def test_resume_equals_uninterrupted(tmp_path, resume_epoch, make_cfg):
    """Resume in the middle of generation 2 (epoch 4 of 3x3) and at its
    start (epoch 3, schedulers built by the hook from generation_schedule):
    the final weights equal an uninterrupted run's."""
    full = Runner.from_cfg(make_cfg(str(tmp_path / 'full')))
    full.train()
    expected = final_state(full)
    ckpt = str(tmp_path / 'full' / f'epoch_{resume_epoch}.pth')
    resumed = Runner.from_cfg(
        make_cfg(str(tmp_path / 'resumed'), resume_from=ckpt, seed=99))
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


# ---------------------------------------------------------------------- #
# generations x epochs: one source of truth
# ---------------------------------------------------------------------- #
def test_hook_derives_length_and_schedule(tmp_path):
    """The KE loop takes G x E from the hook and the hook repeats one
    generation's schedule: shrinking a 3 x 3 run to 2 x 2 through the hook's
    fields gives the lrs and weights of a config listing 2 x 2 by hand."""
    derived = derived_cfg(str(tmp_path / 'derived'))
    derived.merge_from_dict({'custom_hooks.0.num_generations': 2,
                             'custom_hooks.0.epochs_per_generation': 2})
    runners, recorders = [], [Recorder(), Recorder()]
    for cfg, recorder in zip(
            (derived, runner_cfg(str(tmp_path / 'listed'), 2, 2)), recorders):
        runners.append(Runner.from_cfg(cfg))  # seeds the global RNG
        runners[-1].register_hook(recorder)
        runners[-1].train()
        assert runners[-1].epoch == 4
    assert len(runners[0].param_schedulers) == 4
    np.testing.assert_array_equal(recorders[0].lrs, recorders[1].lrs)
    lrs = np.array(recorders[0].lrs).reshape(2, -1)
    np.testing.assert_allclose(lrs[1], lrs[0], rtol=1e-12)
    assert lrs[0, 0] == pytest.approx(0.05 * 0.25)
    expected = final_state(runners[1])
    for key, value in final_state(runners[0]).items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


@pytest.mark.parametrize('change,match', [
    (dict(train_cfg=dict(type='mmekd.KnowledgeEvolutionTrainLoop',
                         max_epochs=16)),
     r'train_cfg.max_epochs=16 contradicts custom_hooks.0.num_generations=3'
     r' x custom_hooks.0.epochs_per_generation=3 = 9'),
    (dict(ke_generations=2, ke_epochs=1),
     r"\['ke_epochs', 'ke_generations'\] are not read by anything.*"
     r'custom_hooks.0.num_generations'),
    (dict(param_scheduler=[dict(type='ConstantLR', by_epoch=True)]),
     r'custom_hooks.0.generation_schedule sets every generation.*'
     r'param_scheduler must be empty'),
])
def test_inconsistent_config_refused(tmp_path, change, match):
    cfg = derived_cfg(str(tmp_path))
    for key, value in change.items():
        cfg[key] = value
    with pytest.raises(ValueError, match=match):
        Runner.from_cfg(cfg).train()


def test_listed_schedules_must_agree(tmp_path):
    """The old trap: generations shrunk in the hook and max_epochs, the
    schedulers still of the old length -> refused, not a constant lr."""
    cfg = runner_cfg(str(tmp_path), gens=3, epochs=3)
    cfg.custom_hooks[0].update(num_generations=2)
    cfg.train_cfg.max_epochs = 6
    with pytest.raises(ValueError, match=r'starts after the last generation'):
        Runner.from_cfg(cfg).train()
    cfg = runner_cfg(str(tmp_path / 'b'), gens=2, epochs=3)
    cfg.param_scheduler = cfg.param_scheduler[:3]  # generation 2: no cosine
    with pytest.raises(ValueError, match=r'different parameter schedules.*'
                       r'custom_hooks.0.generation_schedule'):
        Runner.from_cfg(cfg).train()
    with pytest.raises(ValueError, match=r'end=5 must satisfy 0 <= begin < '
                       r'end <= epochs_per_generation=3'):
        KnowledgeEvolutionHook(2, 3, generation_schedule=[
            dict(type='CosineAnnealingLR', begin=0, end=5)])
    with pytest.raises(ValueError, match='eval_split must be one of'):
        KnowledgeEvolutionHook(2, 3, eval_split='train')


# ---------------------------------------------------------------------- #
# evaluation split, results table, atomic generation checkpoints
# ---------------------------------------------------------------------- #
def test_eval_split_and_results_table(tmp_path):
    """eval_split='test' evaluates on the test set; the table (printed and
    saved) holds every generation's dense and slim top-1 and the costs."""
    cfg = derived_cfg(str(tmp_path), gens=2, epochs=1, eval_split='test')
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.test_dataloader.dataset.update(seed=5, num=24)
    cfg.test_evaluator = dict(type='Accuracy', topk=(1, ))
    cfg.test_cfg = dict()
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = [h for h in runner.hooks
            if isinstance(h, KnowledgeEvolutionHook)][0]
    # The last generation's dense result is the test set's, not val's.
    assert hook.history[-1]['dense/accuracy/top1'] == pytest.approx(
        runner.test()['accuracy/top1'])
    assert runner.val_loop.run()['accuracy/top1'] != pytest.approx(
        hook.history[-1]['dense/accuracy/top1'])
    table = open(osp.join(str(tmp_path), 'ke_results.md')).read()
    rows = [line.split(' | ') for line in table.splitlines()[2:]]
    assert len(rows) == 2
    for row, h in zip(rows, hook.history):
        assert float(row[2]) == pytest.approx(h['dense/accuracy/top1'],
                                              abs=0.005)
        assert float(row[3]) == pytest.approx(h['slim/accuracy/top1'],
                                              abs=0.005)
    import json
    costs = json.load(open(osp.join(str(tmp_path),
                                    'ke_results.json')))['costs']['model']
    dense = runner.model
    assert costs['dense_params'] == sum(p.numel()
                                        for p in dense.parameters())
    _, slim = mmekd.models.ke.extract_slim(dense, cfg.model, 0.5)
    assert costs['slim_params'] == sum(p.numel() for p in slim.parameters())
    assert 0.2 < costs['slim_flops'] / costs['dense_flops'] < 0.3


def test_generation_checkpoints_are_atomic(tmp_path, monkeypatch):
    """generation_<g>.pth appears only by renaming a complete, fsynced
    temporary file; a crash before the rename leaves no generation file."""
    from mmekd.engine.hooks import knowledge_evolution_hook as module
    real = module.fsync_and_replace
    seen = []

    def check_then_replace(tmp, path):
        assert tmp == path + '.tmp' and not osp.exists(path)
        seen.append(safe_load(tmp)['knowledge_evolution']['generation'])
        real(tmp, path)

    monkeypatch.setattr(module, 'fsync_and_replace', check_then_replace)
    Runner.from_cfg(derived_cfg(str(tmp_path / 'ok'), gens=2,
                                epochs=1)).train()
    assert seen == [1, 2]
    assert not glob.glob(str(tmp_path / 'ok' / '*.tmp'))

    def crash(tmp, path):
        raise KeyboardInterrupt('killed before the rename')

    monkeypatch.setattr(module, 'fsync_and_replace', crash)
    with pytest.raises(KeyboardInterrupt):
        Runner.from_cfg(derived_cfg(str(tmp_path / 'crash'), gens=2,
                                    epochs=1)).train()
    assert not osp.exists(str(tmp_path / 'crash' / 'generation_1.pth'))


# ---------------------------------------------------------------------- #
# Knowledge Evolution on a DDNN
# ---------------------------------------------------------------------- #
def ddnn_cfg(private_norm='stats', private_fc=False):
    return dict(
        type='mmekd.DDNNClassifier',
        data_preprocessor=dict(num_classes=4, mean=[128.] * 3,
                               std=[64.] * 3),
        backbone=dict(type='mmekd.DepthDynamicResNetCIFAR', depth=18,
                      stem_channels=8, base_channels=8,
                      sub_depths=[[1, 1, 1, 1], [1, 2, 1, 1]],
                      private_norm=private_norm, out_indices=(0, 1, 2, 3)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='mmekd.MultiNetClsHead', num_classes=4,
                  in_channels=64, private_fc=private_fc))


def test_reset_keeps_and_resets_every_nets_statistics():
    """Re-initialisation never touches a net's own BN statistics
    (reset_norm=False); reset_norm=True resets channels >= ceil(s*C) of every
    set, the per-net ones included."""
    model = MODELS.build(ddnn_cfg())
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(0.5, 1.5)
            m.running_var.uniform_(0.5, 1.5)
    split = KESplit.from_model(model, 'kels', 0.5, 0)
    before = copy.deepcopy(model.state_dict())
    stats = [k for k in before if '.sub_stats.' in k and 'running' in k]
    assert stats  # sub1 reaches layer2.1 with its own input
    reset_hypothesis_(model, split, torch.Generator().manual_seed(0))
    for key in [k for k in before if 'running' in k]:
        assert torch.equal(model.state_dict()[key], before[key]), key
    reset_hypothesis_(model, split, torch.Generator().manual_seed(0),
                      reset_norm=True)
    for key in stats:
        value, old = model.state_dict()[key], before[key]
        k = keep_count(0.5, value.numel())
        assert torch.equal(value[:k], old[:k])
        fill = 0. if key.endswith('running_mean') else 1.
        assert (value[k:] == fill).all(), key


def test_ke_on_ddnn_every_net_dense_and_slim(tmp_path):
    """One run: dense and slim top-1 of every net per generation, each slim
    result equal to evaluating that net's extracted slim network."""
    cfg = derived_cfg(str(tmp_path), gens=2, epochs=1)
    cfg.model = ddnn_cfg()
    # the memory-efficient step's per-net backward passes are one iteration
    cfg.optim_wrapper.type = 'mmekd.SafeOptimWrapper'
    cfg.val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, ))
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = [h for h in runner.hooks
            if isinstance(h, KnowledgeEvolutionHook)][0]
    nets = ['full', 'sub0', 'sub1']
    for h in hook.history:
        for net in nets:
            assert f'dense/{net}/top1' in h and f'slim/{net}/top1' in h
    assert list(hook.costs) == nets
    flops = [hook.costs[n]['dense_flops'] for n in nets]
    assert flops[0] > flops[2] > flops[1]  # depth varies
    for net in nets:  # width varies
        ratio = hook.costs[net]['slim_flops'] / hook.costs[net]['dense_flops']
        assert 0.2 < ratio < 0.3
    from mmengine.evaluator import Evaluator
    from mmpretrain.evaluation import Accuracy
    model = runner.model
    for net in nets:
        _, slim = mmekd.models.ke.extract_slim(model, cfg.model, 0.5, net)
        evaluator = Evaluator(Accuracy(topk=(1, )))
        slim.eval()
        with torch.no_grad():
            for batch in runner.val_dataloader:
                evaluator.process(slim.val_step(batch), batch)
        top1 = evaluator.evaluate(len(runner.val_dataloader.dataset))
        assert top1['accuracy/top1'] == pytest.approx(
            hook.history[-1][f'slim/{net}/top1'])
    rows = open(osp.join(str(tmp_path), 'ke_results.md')).read()
    assert rows.count('| sub1 |') == 2


@pytest.mark.parametrize('backbone', [
    dict(type='mmekd.DepthDynamicConvNeXt',
         arch=dict(depths=[1, 1, 2, 1], channels=[8, 8, 16, 16]),
         sub_stage_blocks=[[1, 1, 1, 1]]),
    dict(type='VisionTransformer', img_size=16, patch_size=8,
         arch=dict(embed_dims=16, num_layers=2, num_heads=2,
                   feedforward_channels=32)),
])
def test_ke_refused_on_a_layer_norm_family(tmp_path, backbone):
    """KELS prunes convolution channels: a KE config on ConvNeXt, Swin or
    ViT (DDNN or plain) is refused before training, naming what works."""
    cfg = runner_cfg(str(tmp_path))
    ddnn = backbone['type'].startswith('mmekd.')
    cfg.model = dict(
        type='mmekd.DDNNClassifier' if ddnn else 'ImageClassifier',
        backbone=backbone,
        head=dict(type='mmekd.MultiNetClsHead' if ddnn else 'LinearClsHead',
                  num_classes=3, in_channels=16))
    with pytest.raises(TypeError, match=r'Knowledge Evolution supports '
                       r'convolutional ResNet-family models .*the backbone '
                       r'is (DepthDynamicConvNeXt|VisionTransformer), a '
                       'LayerNorm family'):
        Runner.from_cfg(cfg).train()

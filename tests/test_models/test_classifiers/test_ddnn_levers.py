# Copyright (c) mmekd contributors. All rights reserved.
"""The loss levers of DDNNClassifier (docs/levers.md): label-CE weights,
which nets train, top-k KL; loss values against hand-computed ones."""
import inspect
import os.path as osp
import uuid

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmpretrain.structures import DataSample
from torch.testing import assert_close

from mmekd.models import DDNNClassifier

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
NUM_CLASSES = 5
# ResNet-18 [2, 2, 2, 2] with three sub-nets of 6, 4 and 5 blocks: sub1 is
# the smallest, sub0 and sub2 the middle ones.
SUB_DEPTHS = [[2, 2, 1, 1], [1, 1, 1, 1], [2, 1, 1, 1]]
LEVERS = ('sub_ce_weight', 'full_loss_weight', 'train_nets', 'kl_topk')


def build(sub_depths=SUB_DEPTHS, **kwargs):
    torch.manual_seed(0)
    model = DDNNClassifier(
        backbone=dict(
            type='mmekd.DepthDynamicResNetCIFAR',
            depth=18,
            stem_channels=4,
            base_channels=4,
            sub_depths=sub_depths,
            out_indices=(0, 1, 2, 3)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='mmekd.MultiNetClsHead',
            num_classes=NUM_CLASSES,
            in_channels=32),
        **kwargs)
    return model.double().train()


@pytest.fixture(scope='module')
def batch():
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(6, 3, 8, 8, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return inputs, samples, labels


@pytest.fixture(scope='module')
def default_losses(batch):
    inputs, samples, _ = batch
    return build().loss(inputs, samples)


def _kl(student, teacher, tau):
    # KLDivLoss works in float32, also on float64 logits.
    student, teacher = student.float(), teacher.float()
    log_s = F.log_softmax(student / tau, dim=1)
    log_t = F.log_softmax(teacher / tau, dim=1)
    return (tau**2 * (log_t.exp() * (log_t - log_s)).sum(1)).mean()


def _logits(model, inputs):
    with torch.no_grad():
        return model.forward_nets(inputs)[0]


def test_defaults_are_the_ekd_loss(batch, default_losses):
    inputs, samples, labels = batch
    explicit = build(sub_ce_weight=1.0, full_loss_weight=1.0,
                     train_nets='all', kl_topk=None)
    got = explicit.loss(inputs, samples)
    assert list(got) == list(default_losses)
    for k in got:
        assert torch.equal(got[k], default_losses[k]), k
    # Every net's plain CE and the T=4 KL from the full net, unweighted.
    logits = _logits(explicit, inputs)
    assert {k for k in got if k.startswith('loss_ce_')} == {
        f'loss_ce_{n}' for n in ['full', 'sub0', 'sub1', 'sub2']}
    for net, score in logits.items():
        assert_close(got[f'loss_ce_{net}'], F.cross_entropy(score, labels))
        if net != 'full':
            assert_close(got[f'loss_kl_{net}'],
                         _kl(score, logits['full'], 4.0))


def test_classifier_defaults_match_base_config():
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', '_base_', 'models', 'ddnn_ekd.py'))
    params = inspect.signature(DDNNClassifier.__init__).parameters
    for name in LEVERS:
        assert cfg.model[name] == params[name].default, name


@pytest.mark.parametrize('weight', [0.25, 0.0])
def test_sub_ce_weight(weight, batch, default_losses):
    inputs, samples, _ = batch
    got = build(sub_ce_weight=weight).loss(inputs, samples)
    for k, ref in default_losses.items():
        if k.startswith('loss_ce_sub'):
            if weight == 0:  # distillation only: the term is gone
                assert k not in got
            else:
                assert_close(got[k], weight * ref, rtol=1e-12, atol=0)
        else:
            assert torch.equal(got[k], ref), k
    assert set(got) <= set(default_losses)


def test_full_loss_weight(batch, default_losses):
    inputs, samples, _ = batch
    got = build(full_loss_weight=0.5).loss(inputs, samples)
    assert set(got) == set(default_losses)
    for k, ref in default_losses.items():
        expect = 0.5 * ref if k == 'loss_ce_full' else ref
        assert_close(got[k], expect, rtol=1e-12, atol=0)


def test_kl_topk(batch, default_losses):
    inputs, samples, _ = batch
    model = build(kl_topk=2, at_loss=None)
    got = model.loss(inputs, samples)
    logits = _logits(model, inputs)
    top = logits['full'].topk(2, dim=1).indices
    for net in ('sub0', 'sub1', 'sub2'):
        ref = _kl(logits[net].gather(1, top), logits['full'].gather(1, top),
                  4.0)
        assert_close(got[f'loss_kl_{net}'], ref)
        # Not the all-class KL: the lever changes the value.
        assert not torch.allclose(got[f'loss_kl_{net}'],
                                  default_losses[f'loss_kl_{net}'])
    # All classes, in the teacher's order: the plain KL.
    full = build(kl_topk=NUM_CLASSES).loss(inputs, samples)
    for k, ref in default_losses.items():
        assert_close(full[k], ref)


def test_sandwich_trains_full_and_smallest(batch, default_losses):
    inputs, samples, _ = batch
    model = build(train_nets='sandwich')
    assert model.nets_to_train() == ['full', 'sub1']
    got = model.loss(inputs, samples)
    # Batch statistics: a net's losses do not depend on the other nets run.
    assert list(got) == [k for k in default_losses
                         if k.endswith('_full') or k.endswith('_sub1')]
    for k in got:
        assert_close(got[k], default_losses[k], rtol=1e-12, atol=0)


def _hub(seed, step):
    hub = MessageHub.get_instance(f'levers-{uuid.uuid4().hex}')
    hub.update_info('seed', seed)
    hub.update_info('iter', step)
    return hub


def test_sandwich_random_draws_from_seed_and_iteration():
    model = build(train_nets='sandwich_random')
    draws = {}
    for step in range(40):
        _hub(7, step)
        nets = model.nets_to_train()
        assert nets in (['full', 'sub0', 'sub1'], ['full', 'sub1', 'sub2'])
        draws[step] = nets
    middle = {tuple(n for n in nets if n not in ('full', 'sub1'))
              for nets in draws.values()}
    assert middle == {('sub0', ), ('sub2', )}
    # A resumed run (a fresh model at iteration 23 of the same seed) draws
    # the same nets; another seed draws another sequence.
    resumed = build(train_nets='sandwich_random')
    for step in (23, 24, 5):
        _hub(7, step)
        assert resumed.nets_to_train() == draws[step]
    other = []
    for step in range(40):
        _hub(8, step)
        other.append(resumed.nets_to_train())
    assert other != [draws[s] for s in range(40)]


def test_sandwich_random_outside_a_runner_counts_steps(batch,
                                                       default_losses):
    inputs, samples, _ = batch
    _hub(None, None)
    a, b = build(train_nets='sandwich_random'), build(
        train_nets='sandwich_random')
    seq = [a.nets_to_train() for _ in range(12)]
    assert seq == [b.nets_to_train() for _ in range(12)]
    assert len({tuple(s) for s in seq}) == 2
    got = build(train_nets='sandwich_random').loss(inputs, samples)
    nets = {k.rsplit('_', 1)[1] for k in got}
    assert nets == set(seq[0])
    for k in got:
        assert_close(got[k], default_losses[k], rtol=1e-12, atol=0)


def test_adaptive_depth_combination(batch):
    """Adaptive Depth Networks' loss: 0.5 CE(full) + 0.5 KL(T=1) to the
    smallest sub-net, which gets no label CE; no attention term."""
    inputs, samples, labels = batch
    model = build(
        train_nets='sandwich',
        sub_ce_weight=0.0,
        full_loss_weight=0.5,
        kl_loss=dict(type='mmekd.KLDivLoss', tau=1.0, loss_weight=0.5),
        at_loss=None)
    got = model.loss(inputs, samples)
    assert set(got) == {'loss_ce_full', 'loss_kl_sub1'}
    logits = _logits(model, inputs)
    total, _ = model.parse_losses(got)
    ref = 0.5 * F.cross_entropy(logits['full'], labels) + 0.5 * _kl(
        logits['sub1'], logits['full'], 1.0).double()
    assert_close(total, ref)


@pytest.mark.parametrize('kwargs, match', [
    (dict(sub_ce_weight=-0.1), 'sub_ce_weight must be a finite number >= 0'),
    (dict(sub_ce_weight='0.5'), 'sub_ce_weight'),
    (dict(sub_ce_weight=True), 'sub_ce_weight'),
    (dict(sub_ce_weight=float('nan')), 'sub_ce_weight'),
    (dict(full_loss_weight=0), 'full_loss_weight must be a finite number > 0'),
    (dict(full_loss_weight=float('inf')), 'full_loss_weight'),
    (dict(sub_ce_weight=0, kl_loss=None, at_loss=None),
     'without any loss'),
    (dict(train_nets='some'), r"train_nets must be one of \('all', "
     r"'sandwich', 'sandwich_random'\), got 'some'"),
    (dict(train_nets='sandwich', sub_depths=[[1, 2, 1, 1], [2, 1, 1, 1]]),
     r"one smallest sub-net, but \['sub0', 'sub1'\] all have 5 blocks"),
    (dict(train_nets='sandwich_random', sub_depths=[[1, 1, 1, 1]]),
     r"only \['sub0'\]"),
    (dict(kl_topk=0), r'kl_topk must be None or an int in \[1, 5\]'),
    (dict(kl_topk=6), r'kl_topk must be None or an int in \[1, 5\]'),
    (dict(kl_topk=2.0), 'kl_topk'),
    (dict(kl_topk=2, kl_loss=None), 'kl_topk is set but kl_loss is None'),
])
def test_bad_levers(kwargs, match):
    # A wrong type is a TypeError, a wrong value a ValueError (one
    # validator for every number field: mmekd.utils.numbers).
    with pytest.raises((TypeError, ValueError), match=match):
        build(**kwargs)


def _train(model, work_dir, seed, resume_from=None):
    """Train ``model`` 4 iterations (checkpoints every 2) with MMEngine's
    runner; return ``{iter: nets trained}`` of the iterations run."""
    from mmengine.runner import Runner
    from torch.utils.data import DataLoader
    gen = torch.Generator().manual_seed(0)
    samples = [dict(inputs=torch.rand(3, 8, 8, generator=gen) * 255,
                    label=i % NUM_CLASSES) for i in range(8)]

    def collate(items):
        return dict(inputs=torch.stack([s['inputs'] for s in items]),
                    data_samples=[DataSample().set_gt_label(s['label'])
                                  for s in items])

    drawn = {}
    draw = model.nets_to_train

    def record():
        nets = draw()
        drawn[MessageHub.get_current_instance().get_info('iter')] = nets
        return nets

    model.nets_to_train = record
    runner = Runner(
        model=model.float(),
        work_dir=str(work_dir),
        experiment_name=f'levers-{uuid.uuid4().hex}',
        train_dataloader=DataLoader(samples, batch_size=4, collate_fn=collate),
        train_cfg=dict(by_epoch=False, max_iters=4),
        optim_wrapper=dict(type='mmekd.SafeOptimWrapper',
                           optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False)),
        randomness=dict(seed=seed),
        load_from=resume_from,
        resume=resume_from is not None,
        default_scope='mmpretrain')
    runner.train()
    return drawn


def test_sandwich_random_in_a_runner_resumes_exactly(tmp_path):
    kwargs = dict(train_nets='sandwich_random', kl_loss=None)
    drawn = _train(build(**kwargs), tmp_path / 'a', seed=6)
    assert sorted(drawn) == [0, 1, 2, 3]
    # The runner's seed and iteration decide the draw.
    for step, nets in drawn.items():
        _hub(6, step)
        assert build(**kwargs).nets_to_train() == nets
    # Resumed at iteration 2 with another seed in the config: the runner
    # takes the checkpoint's seed, the last two iterations draw the same.
    resumed = _train(build(**kwargs), tmp_path / 'b', seed=1,
                     resume_from=str(tmp_path / 'a' / 'iter_2.pth'))
    assert resumed == {2: drawn[2], 3: drawn[3]}
    # ... which neither a count of the model's own steps (iterations 0, 1)
    # nor the config's seed 1 would have drawn.
    assert [drawn[2], drawn[3]] != [drawn[0], drawn[1]]
    by_config_seed = []
    for step in (2, 3):
        _hub(1, step)
        by_config_seed.append(build(**kwargs).nets_to_train())
    assert by_config_seed != [drawn[2], drawn[3]]

# Copyright (c) mmekd contributors. All rights reserved.
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from mmekd.engine.optim import NonFiniteLossError, SafeOptimWrapper
from mmekd.utils import apply_safe_training_defaults


class ToyModel(BaseModel):
    """Two loss terms; ``bad`` makes one of them NaN or inf."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.bad = None

    def forward(self, inputs, data_samples=None, mode='loss'):
        out = self.fc(inputs)
        losses = dict(loss_a=out.pow(2).mean(), loss_b=out.mean().abs(),
                      acc=torch.tensor(float('nan')))  # not summed
        if self.bad is not None:
            losses['loss_b'] = losses['loss_b'] * self.bad
        return losses


def _data(seed=0):
    return dict(inputs=torch.randn(8, 4, generator=torch.Generator()
                                   .manual_seed(seed)))


def _wrapper(model, **kwargs):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                          weight_decay=1e-2)
    return SafeOptimWrapper(opt, **kwargs)


def _snapshot(model, wrapper):
    return (copy.deepcopy(model.state_dict()),
            copy.deepcopy(wrapper.optimizer.state_dict()))


def _assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    sa, sb = a[1]['state'], b[1]['state']
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)


@pytest.fixture
def at_iteration():
    hub = MessageHub.get_current_instance()

    def set_iter(i, epoch=0):
        hub.update_info('iter', i)
        hub.update_info('epoch', epoch)

    return set_iter


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_stop_names_term_and_iteration(at_iteration, bad):
    model = ToyModel()
    wrapper = _wrapper(model)
    model.train_step(_data(), wrapper)  # a good step: momentum exists
    before = _snapshot(model, wrapper)
    model.bad = bad
    at_iteration(41, epoch=2)
    with pytest.raises(NonFiniteLossError) as e:
        model.train_step(_data(1), wrapper)
    msg = str(e.value)
    assert 'iteration 42 (epoch 3)' in msg
    assert f'loss_b={bad}' in msg
    assert 'loss_a' not in msg and 'acc' not in msg  # finite / not a loss
    _assert_same(before, _snapshot(model, wrapper))


def test_skip_leaves_weights_and_optimizer_state(at_iteration):
    model = ToyModel()
    wrapper = _wrapper(model, on_nonfinite='skip')
    model.train_step(_data(), wrapper)
    before = _snapshot(model, wrapper)
    model.bad = float('nan')
    at_iteration(7)
    model.train_step(_data(1), wrapper)
    assert wrapper.num_skipped == 1
    assert MessageHub.get_current_instance().get_info(
        'nonfinite_skipped') == 1
    _assert_same(before, _snapshot(model, wrapper))
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())

    # Training goes on exactly as if the bad batch had not been there.
    reference = ToyModel()
    reference.load_state_dict(before[0])
    ref_wrapper = _wrapper(reference)
    ref_wrapper.optimizer.load_state_dict(before[1])
    model.bad = None
    model.train_step(_data(2), wrapper)
    reference.train_step(_data(2), ref_wrapper)
    torch.testing.assert_close(model.state_dict(), reference.state_dict(),
                               rtol=0, atol=0)


def test_max_skipped(at_iteration):
    model = ToyModel()
    model.bad = float('nan')
    wrapper = _wrapper(model, on_nonfinite='skip', max_skipped=1)
    model.train_step(_data(), wrapper)
    with pytest.raises(NonFiniteLossError, match='2 iterations skipped'):
        model.train_step(_data(), wrapper)


def test_skip_with_gradient_accumulation(at_iteration):
    """A skipped micro-batch adds no gradient; the window still steps."""
    model, reference = ToyModel(), ToyModel()
    reference.load_state_dict(model.state_dict())
    wrapper = _wrapper(model, on_nonfinite='skip', accumulative_counts=2)
    ref_wrapper = _wrapper(reference, accumulative_counts=2)
    ref_wrapper._inner_count = 1  # ref sees only the second micro-batch
    model.bad = float('nan')
    model.train_step(_data(0), wrapper)
    model.bad = None
    model.train_step(_data(1), wrapper)
    # SafeOptimWrapper scales each micro-batch by 1/2, as MMEngine does.
    reference.train_step(_data(1), ref_wrapper)
    torch.testing.assert_close(model.state_dict(), reference.state_dict())
    # A window with only skipped micro-batches does not step at all.
    before = _snapshot(model, wrapper)
    model.bad = float('inf')
    model.train_step(_data(2), wrapper)
    model.train_step(_data(3), wrapper)
    _assert_same(before, _snapshot(model, wrapper))


def test_clip_grad_limits_the_update():
    """``clip_grad`` (MMEngine's) works through SafeOptimWrapper."""
    model = ToyModel()
    w0 = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    wrapper = SafeOptimWrapper(opt, clip_grad=dict(max_norm=0.01))
    data = dict(inputs=100 * torch.randn(8, 4))
    model.train_step(data, wrapper)
    step = torch.cat([(model.state_dict()[k] - w0[k]).flatten()
                      for k in w0])
    assert step.norm().item() == pytest.approx(0.01, rel=1e-4)


def test_config_and_validation():
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        _wrapper(ToyModel(), on_nonfinite='ignore')
    with pytest.raises(ValueError, match='max_skipped'):
        _wrapper(ToyModel(), on_nonfinite='skip', max_skipped=-1)
    cfg = Config(dict(optim_wrapper=dict(
        optimizer=dict(type='SGD', lr=0.1)), default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1))))
    # The config says what runs: nothing is swapped without the flag.
    apply_safe_training_defaults(cfg, on_nonfinite=None)
    assert 'type' not in cfg.optim_wrapper
    apply_safe_training_defaults(cfg, on_nonfinite='skip')
    assert cfg.optim_wrapper.type == 'mmekd.SafeOptimWrapper'
    assert cfg.default_hooks.checkpoint.type == 'CheckpointHook'
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        wrapper = build_optim_wrapper(ToyModel(), cfg.optim_wrapper)
    assert isinstance(wrapper, SafeOptimWrapper)
    assert wrapper.on_nonfinite == 'skip'
    amp = Config(dict(optim_wrapper=dict(type='AmpOptimWrapper')))
    with pytest.raises(SystemExit, match='needs mmekd.SafeOptimWrapper'):
        apply_safe_training_defaults(amp, on_nonfinite='skip')


def _ddnn_batch(nan: bool):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, 3, 8, 8, generator=g)
    if nan:
        inputs[0, 0, 0, 0] = float('nan')
    return dict(
        inputs=inputs,
        data_samples=[DataSample().set_gt_label(i % 3) for i in range(4)])


@pytest.mark.parametrize('mode', ['stop', 'skip'])
def test_memory_efficient_ddnn_step_is_guarded(mode, at_iteration,
                                               tiny_ddnn_cfg):
    """DDNNClassifier's memory-efficient step back-propagates itself; a
    non-finite loss must still stop or skip without updating weights."""
    from mmekd.registry import MODELS
    model = MODELS.build(
        dict(tiny_ddnn_cfg, train_step_mode='memory_efficient'))
    model.init_weights()
    wrapper = _wrapper(model, on_nonfinite=mode)
    model.train_step(_ddnn_batch(nan=False), wrapper)  # momentum state
    before = _snapshot(model, wrapper)
    if mode == 'stop':
        with pytest.raises(NonFiniteLossError, match='loss_ce_full'):
            model.train_step(_ddnn_batch(nan=True), wrapper)
    else:
        model.train_step(_ddnn_batch(nan=True), wrapper)
        assert wrapper.num_skipped == 1
        assert all(p.grad is None or not p.grad.any()
                   for p in model.parameters())
    # Weights and optimizer state are untouched. (BatchNorm running
    # statistics are updated by the forward pass before any loss exists,
    # as in MMEngine's own step.)
    after = _snapshot(model, wrapper)
    params = dict(model.named_parameters())
    for name in params:
        torch.testing.assert_close(
            after[0][name], before[0][name], rtol=0, atol=0)
    _assert_same(({}, after[1]), ({}, before[1]))


@pytest.mark.parametrize('step_mode', ['simple', 'memory_efficient'])
def test_skipped_step_leaves_every_tensor_as_before(step_mode, at_iteration,
                                                    tiny_ddnn_cfg):
    """A NaN sample under ``skip``: the forward had already written NaN
    into the BatchNorm running statistics (and counted the batch). Every
    tensor of the model (buffers included) and the optimizer state must
    equal their values before the skipped step, and training goes on."""
    from mmekd.registry import MODELS
    model = MODELS.build(dict(tiny_ddnn_cfg, train_step_mode=step_mode))
    model.init_weights()
    wrapper = _wrapper(model, on_nonfinite='skip')
    at_iteration(3)
    model.train_step(_ddnn_batch(nan=False), wrapper)
    before = _snapshot(model, wrapper)
    at_iteration(4)
    model.train_step(_ddnn_batch(nan=True), wrapper)
    assert wrapper.num_skipped == 1
    assert wrapper.skipped[0].startswith('iteration 5 (epoch 1)')
    _assert_same(_snapshot(model, wrapper), before)
    at_iteration(5)
    model.train_step(_ddnn_batch(nan=False), wrapper)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values()
               if v.is_floating_point())


def test_max_skipped_has_a_finite_default_and_names_the_skips(at_iteration):
    model = ToyModel()
    wrapper = _wrapper(model, on_nonfinite='skip')
    assert wrapper.max_skipped == 10
    model.bad = float('nan')
    for i in range(10):
        at_iteration(i)
        model.train_step(_data(), wrapper)
    at_iteration(10)
    with pytest.raises(NonFiniteLossError,
                       match=r'11 iterations skipped for a non-finite loss, '
                       r'more than max_skipped=10 .*iteration 11 \(epoch 1\): '
                       r'loss_b=nan'):
        model.train_step(_data(), wrapper)

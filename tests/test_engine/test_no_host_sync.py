# Copyright (c) mmekd contributors. All rights reserved.
"""No tensor-to-Python conversion (a host sync on a GPU) in the training
iterations on which the logger does not print (DeferredRuntimeInfoHook and
SafeOptimWrapper's deferred non-finite check), in MMEngine's real loop."""
import copy
import os.path as osp
import time
import traceback

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.datasets import BaseDataset
from torch.overrides import TorchFunctionMode

import mmekd  # noqa: F401
from mmekd.engine import DeferredRuntimeInfoHook
from mmekd.engine.hooks.deferred_runtime_info_hook import read_scalars
from mmekd.engine.optim import NonFiniteLossError, SafeOptimWrapper
from mmekd.registry import DATASETS
from mmekd.utils import safe_load

init_default_scope('mmpretrain')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ITERS = 10  # one epoch of 10 iterations
INTERVAL = 4  # the logger prints after iterations 4 and 8 (ignore_last)
PRINTS = {4, 8}

_CONVERSIONS = {
    torch.Tensor.item: 'item',
    torch.Tensor.tolist: 'tolist',
    torch.Tensor.__bool__: '__bool__',
    torch.Tensor.__float__: '__float__',
    torch.Tensor.__int__: '__int__',
    torch.Tensor.__index__: '__index__',
    torch.Tensor.numpy: 'numpy',
}


class CountConversions(TorchFunctionMode):
    """Counts tensor-to-Python conversions (each a device sync on a GPU),
    and where they happen; ``.cpu()``/``.to()`` of a non-CPU tensor to the
    CPU count too."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _CONVERSIONS.get(func)
        if name is None and func in (torch.Tensor.cpu, torch.Tensor.to) \
                and args and isinstance(args[0], torch.Tensor) \
                and args[0].device.type != 'cpu':
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor) and out.device.type == 'cpu':
                self._record('to cpu')
            return out
        if name is not None:
            self._record(name)
        return func(*args, **kwargs)

    def _record(self, name):
        stack = traceback.extract_stack()[:-2]
        where = [f'{osp.basename(f.filename)}:{f.lineno} {f.name}'
                 for f in stack[-6:]]
        self.calls.append((name, where))


def test_the_counter_sees_conversions():
    t = torch.tensor([1.5])
    with CountConversions() as mode:
        t.item()
    assert len(mode.calls) == 1
    with CountConversions() as mode:
        t.tolist(), bool(t), float(t), int(t), t.numpy()
        [0, 1][torch.tensor(1)]
        torch.ones(()).sum().item()
    assert [c[0] for c in mode.calls] == [
        'tolist', '__bool__', '__float__', '__int__', 'numpy', '__index__',
        'item']
    with CountConversions() as mode:
        (t * 2 + 1).sum()  # no conversion
    assert mode.calls == []


# ---------------------------------------------------------------------- #
# a tiny DDNN trained by MMEngine's Runner with the default runtime's hooks
# ---------------------------------------------------------------------- #
@DATASETS.register_module(force=True)
class NoSyncTinyDataset(BaseDataset):
    """3 classes of 8x8 noise images with a class-dependent mean."""
    METAINFO = dict(classes=['a', 'b', 'c'])

    def __init__(self, num: int = 4 * ITERS, **kwargs):
        self.num = num
        super().__init__(ann_file='', **kwargs)

    def load_data_list(self):
        rng = np.random.RandomState(0)
        return [
            dict(img=(rng.randint(0, 150, (8, 8, 3)) + 40 * (i % 3)).astype(
                np.uint8), gt_label=i % 3) for i in range(self.num)
        ]


class IterationCounter(Hook):
    """Counts the conversions of every training iteration: from the very
    first ``before_train_iter`` to the very last ``after_train_iter``
    (forward, backward, step and every hook of the iteration)."""
    priority = 'LOWEST'

    def __init__(self):
        self.per_iter = {}
        self._mode = None

    def before_train(self, runner):
        loop = runner.train_loop
        run_iter = loop.run_iter

        def counted(idx, data_batch):
            with CountConversions() as mode:
                run_iter(idx, data_batch)
            self.per_iter[runner.iter] = mode.calls  # runner.iter: 1-based

        loop.run_iter = counted


class InjectNaN(Hook):
    """Puts a NaN into the input batch of the given (1-based) iteration,
    through a forward hook of the data preprocessor (no conversion)."""
    priority = 'LOWEST'

    def __init__(self, at=None):
        self.at = at
        self.calls = 0
        self.handle = None

    def before_train(self, runner):
        if self.at is None:
            return
        model = runner.model.module if hasattr(runner.model, 'module') \
            else runner.model

        def poison(module, args, output):
            if module.training:
                self.calls += 1
                if self.calls == self.at:
                    output['inputs'][0, 0, 0, 0] = float('nan')
            return output

        self.handle = model.data_preprocessor.register_forward_hook(poison)

    def after_train(self, runner):
        if self.handle is not None:
            self.handle.remove()


def tiny_ddnn(step_mode):
    return dict(
        type='mmekd.DDNNClassifier',
        train_step_mode=step_mode,
        data_preprocessor=dict(
            num_classes=3, mean=[120.] * 3, std=[60.] * 3),
        backbone=dict(
            type='mmekd.DepthDynamicResNetCIFAR', depth=18, stem_channels=4,
            base_channels=4, sub_stage_blocks=[[1, 1, 1, 1]],
            out_indices=(0, 1, 2, 3)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='mmekd.MultiNetClsHead', num_classes=3,
                  in_channels=32))


def build_runner(work_dir, step_mode='memory_efficient', on_nonfinite='stop',
                 deferred=True, nan_at=None, fused=True, checkpoint=True,
                 collate='pseudo'):
    base = Config.fromfile(osp.join(ROOT, 'configs/_base_/default_runtime.py'))
    hooks = copy.deepcopy(base.default_hooks)
    assert hooks.runtime_info.type == 'mmekd.DeferredRuntimeInfoHook'
    if not deferred:
        hooks.runtime_info = dict(type='RuntimeInfoHook')
    hooks.logger.interval = INTERVAL
    if checkpoint:
        hooks.checkpoint = dict(type='mmekd.AtomicCheckpointHook', interval=1)
    else:
        hooks.checkpoint = None
    counter, inject = IterationCounter(), InjectNaN(nan_at)
    cfg = Config(dict(
        model=tiny_ddnn(step_mode),
        work_dir=str(work_dir),
        experiment_name=f'nosync_{time.time_ns()}',
        train_dataloader=dict(
            batch_size=4, num_workers=0, persistent_workers=False,
            dataset=dict(type='mmekd.NoSyncTinyDataset',
                         pipeline=[dict(type='PackInputs')]),
            sampler=dict(type='DefaultSampler', shuffle=False),
            **(dict(collate_fn=dict(type='default_collate'))
               if collate == 'default' else {})),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(
            type='mmekd.SafeOptimWrapper', on_nonfinite=on_nonfinite,
            check='device' if deferred else 'host',
            optimizer=dict(type='SGD', lr=0.01, momentum=0.9,
                           weight_decay=1e-4, fused=fused)),
        default_hooks=hooks,
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0),
        default_scope='mmpretrain',
        log_level='WARNING'))
    runner = Runner.from_cfg(cfg)
    runner.register_hook(counter)
    runner.register_hook(inject)
    return runner, counter


def _allowed(calls, iteration, collate):
    """``calls`` less the conversions known to remain, which are no device
    syncs or happen once:

    - iteration 1 only: ``MultiNetClsHead._check_labels`` validates the
      labels of the first batch (one read of their min and max);
    - with MMEngine's default ``pseudo_collate`` (what mmekd's configs
      use), every iteration: ``mmengine.model.utils.stack_batch`` (called
      by mmpretrain's ``ClsDataPreprocessor.forward`` to stack the list of
      images) tests ``padded_sizes.sum() == 0`` on a CPU tensor it builds
      from the images' shapes: a host-only tensor, never on the device, so
      no sync. ``default_collate`` (stacked inputs) does not call it.
    """
    out = []
    for name, where in calls:
        if iteration == 1 and any('_check_labels' in w for w in where):
            continue
        if collate == 'pseudo' and name == '__bool__' and \
                where[-1].endswith(' stack_batch'):
            continue
        out.append((name, where))
    return out


def _assert_no_conversions(counter, collate='pseudo'):
    assert sorted(counter.per_iter) == list(range(1, ITERS + 1))
    for it, calls in counter.per_iter.items():
        if it in PRINTS:
            assert calls, f'iteration {it}: the flush reads the values'
            continue
        calls = _allowed(calls, it, collate)
        assert not calls, f'iteration {it}: {calls}'


@pytest.mark.parametrize('on_nonfinite', ['stop', 'skip'])
@pytest.mark.parametrize('step_mode', ['memory_efficient', 'simple'])
def test_no_conversion_between_log_lines(tmp_path, step_mode, on_nonfinite):
    runner, counter = build_runner(tmp_path, step_mode, on_nonfinite)
    runner.train()
    assert runner.optim_wrapper._pending == []
    _assert_no_conversions(counter)
    if step_mode == 'memory_efficient' and on_nonfinite == 'stop':
        # With stacked inputs not even the host-only test remains.
        runner, counter = build_runner(tmp_path / 'default', step_mode,
                                       on_nonfinite, collate='default')
        runner.train()
        _assert_no_conversions(counter, collate='default')
    # The printing iterations read the losses once (one stack per device)
    # and the flags once.
    for it in PRINTS:
        names = [c[0] for c in counter.per_iter[it]]
        assert names.count('tolist') == 2, counter.per_iter[it]


def _state(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def _scalars(log_scalars):
    return {
        key: (list(buf._log_history), list(buf._count_history))
        for key, buf in log_scalars.items()
        if key not in ('train/time', 'train/data_time')
    }


def test_message_hub_and_checkpoint_match_the_stock_hook(tmp_path):
    results = []
    for deferred in (True, False):
        work = tmp_path / str(deferred)
        runner, _ = build_runner(work, deferred=deferred)
        runner.train()
        hub = runner.message_hub
        ckpt = safe_load(str(work / 'epoch_1.pth'))
        results.append((_scalars(hub.log_scalars), hub.log_scalars.keys(),
                        _scalars(ckpt['message_hub']['log_scalars']),
                        _state(runner)))
    (ours, keys, ckpt, state), (stock, stock_keys, stock_ckpt,
                                stock_state) = results
    assert set(keys) == set(stock_keys)
    assert 'train/loss' in ours and 'train/loss_ce_full' in ours
    assert len(ours['train/loss'][0]) == ITERS
    for key in stock:
        assert ours[key][1] == stock[key][1], key
        np.testing.assert_array_equal(ours[key][0], stock[key][0], key)
    assert ckpt.keys() == stock_ckpt.keys()
    for key in stock_ckpt:
        np.testing.assert_array_equal(ckpt[key][0], stock_ckpt[key][0], key)
    # The same training (deferred: fused with zero-initialised momentum).
    torch.testing.assert_close(state, stock_state, rtol=0, atol=0)


@pytest.mark.parametrize('step_mode', ['memory_efficient', 'simple'])
def test_nan_is_reported_at_the_next_log_line(tmp_path, step_mode):
    """'stop': a NaN at iteration 6 is raised at the flush of iteration 8,
    naming iteration 6; the weights are those before iteration 6 (as the
    immediate check leaves them)."""
    runner, counter = build_runner(tmp_path / 'a', step_mode, 'stop',
                                   nan_at=6, checkpoint=False)
    with pytest.raises(NonFiniteLossError,
                       match=r'iteration 6 \(epoch 1\): .*loss_ce_full=nan'):
        runner.train()
    assert max(counter.per_iter) == 7  # iteration 8 raised in its flush
    ref, _ = build_runner(tmp_path / 'b', step_mode, 'stop', deferred=False,
                          nan_at=6, checkpoint=False)
    with pytest.raises(NonFiniteLossError, match=r'iteration 6 \(epoch 1\)'):
        ref.train()
    # The weights are the immediate check's (the step of iteration 6 and
    # the two after it were not applied); the buffers are even restored
    # (the immediate 'stop' leaves iteration 6's BatchNorm update in).
    params = [k for k, _ in runner.model.named_parameters()]
    state, ref_state = _state(runner), _state(ref)
    torch.testing.assert_close({k: state[k] for k in params},
                               {k: ref_state[k] for k in params},
                               rtol=0, atol=0)
    assert state['backbone.bn1.num_batches_tracked'] == 5
    assert all(torch.isfinite(v).all() for v in state.values()
               if v.is_floating_point())


@pytest.mark.parametrize('step_mode', ['memory_efficient', 'simple'])
def test_skipped_nan_iteration_leaves_no_trace(tmp_path, step_mode):
    """'skip': the NaN iteration (3) is counted at the next flush (4) and
    the final weights and BatchNorm statistics equal those of a run that
    skipped it with the immediate check; no conversion between log lines."""
    runner, counter = build_runner(tmp_path / 'a', step_mode, 'skip',
                                   nan_at=3, checkpoint=False)
    runner.train()
    wrapper = runner.optim_wrapper
    assert wrapper.num_skipped == 1
    assert wrapper.skipped[0].startswith('iteration 3 (epoch 1)')
    assert runner.message_hub.get_info('nonfinite_skipped') == 1
    _assert_no_conversions(counter)
    ref, _ = build_runner(tmp_path / 'b', step_mode, 'skip', deferred=False,
                          nan_at=3, checkpoint=False)
    ref.train()
    assert ref.optim_wrapper.num_skipped == 1
    state = _state(runner)
    assert all(torch.isfinite(v).all() for v in state.values()
               if v.is_floating_point())
    torch.testing.assert_close(state, _state(ref), rtol=0, atol=0)


def test_not_fused_keeps_the_immediate_check(tmp_path):
    runner, counter = build_runner(tmp_path, fused=False, checkpoint=False)
    runner.train()
    assert not runner.optim_wrapper.checks_on_device
    # One flag read per iteration, as before; the losses are still
    # deferred.
    for it, calls in counter.per_iter.items():
        if it not in PRINTS:
            assert [c[0] for c in _allowed(calls, it, 'pseudo')] == \
                ['item'], (it, calls)


# ---------------------------------------------------------------------- #
# the wrapper alone
# ---------------------------------------------------------------------- #
class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.bn = nn.BatchNorm1d(2)
        self.bad = False

    def forward(self, inputs, data_samples=None, mode='loss'):
        out = self.bn(self.fc(inputs))
        loss = out.pow(2).mean() + out.mean()
        if self.bad:
            loss = loss * float('nan')
        return dict(loss_a=loss)


def _data(seed):
    return dict(inputs=torch.randn(
        8, 4, generator=torch.Generator().manual_seed(seed)))


def _fused_wrapper(model, defer=True, **kwargs):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                          weight_decay=1e-2, fused=True)
    return SafeOptimWrapper(opt, check='device' if defer else 'host',
                            **kwargs)


def _nan_first_then_finite(model, wrapper, reference, ref_wrapper,
                           after_nan=None):
    """A non-finite step 0 on ``model`` (deferred, skipped), then steps 1-3
    on both models: ``model`` ends exactly as ``reference``, which never saw
    step 0. ``after_nan()`` must hold right after step 0."""
    model.bad = True
    model.train_step(_data(0), wrapper)
    if after_nan is not None:
        assert after_nan()
    model.bad = False
    for seed in range(1, 4):
        model.train_step(_data(seed), wrapper)
        reference.train_step(_data(seed), ref_wrapper)
    wrapper.report_nonfinite()
    assert wrapper.num_skipped == 1
    torch.testing.assert_close(model.state_dict(), reference.state_dict(),
                               rtol=0, atol=0)


@pytest.mark.parametrize('optimizer', ['sgd', 'sgd_nesterov', 'adamw'])
def test_nan_at_the_first_fused_step(optimizer):
    """A skipped first step must not leave uninitialised momentum buffers:
    NaN at step 1 then finite steps == the finite steps alone."""
    torch.manual_seed(0)
    model = ToyModel()
    reference = copy.deepcopy(model)
    wrapper = _fused_wrapper(model, on_nonfinite='skip')
    ref_wrapper = _fused_wrapper(reference, defer=False)
    if optimizer == 'adamw':
        for w in (wrapper, ref_wrapper):
            params = [p for g in w.optimizer.param_groups
                      for p in g['params']]
            w.optimizer = torch.optim.AdamW(params, lr=0.01, fused=True)
    if optimizer == 'sgd_nesterov':
        for opt in (wrapper.optimizer, ref_wrapper.optimizer):
            opt.param_groups[0]['nesterov'] = True
    state_key = 'exp_avg' if optimizer == 'adamw' else 'momentum_buffer'
    assert wrapper.checks_on_device and not ref_wrapper.checks_on_device
    _nan_first_then_finite(model, wrapper, reference, ref_wrapper)
    for p, q in zip(model.parameters(), reference.parameters()):
        for key in ('step', state_key):
            if key in ref_wrapper.optimizer.state[q]:
                torch.testing.assert_close(
                    wrapper.optimizer.state[p][key],
                    ref_wrapper.optimizer.state[q][key], rtol=0, atol=0)


def test_dampening_first_step_is_checked_on_the_host():
    torch.manual_seed(0)
    model = ToyModel()
    reference = copy.deepcopy(model)
    wrapper, ref_wrapper = _fused_wrapper(model, on_nonfinite='skip'), \
        _fused_wrapper(reference, defer=False)
    for opt in (wrapper.optimizer, ref_wrapper.optimizer):
        opt.param_groups[0]['dampening'] = 0.5
    _nan_first_then_finite(
        model, wrapper, reference, ref_wrapper,
        after_nan=lambda: wrapper.optimizer.state == {} or all(
            'momentum_buffer' not in s
            for s in wrapper.optimizer.state.values()))


def test_deferred_stop_leaves_the_model_before_the_nan():
    torch.manual_seed(0)
    model = ToyModel()
    wrapper = _fused_wrapper(model)
    model.train_step(_data(0), wrapper)
    before = copy.deepcopy(model.state_dict())
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 1)
    hub.update_info('epoch', 0)
    model.bad = True
    model.train_step(_data(1), wrapper)  # no error yet
    model.bad = False
    hub.update_info('iter', 2)
    model.train_step(_data(2), wrapper)  # not applied either
    torch.testing.assert_close(model.state_dict(), before, rtol=0, atol=0)
    with pytest.raises(NonFiniteLossError,
                       match=r'iteration 2 \(epoch 1\): loss_a=nan'):
        wrapper.report_nonfinite()
    wrapper.report_nonfinite()  # nothing pending any more


def test_without_the_hook_the_check_is_immediate():
    model = ToyModel()
    wrapper = _fused_wrapper(model, defer=False)
    model.bad = True
    with pytest.raises(NonFiniteLossError):
        model.train_step(_data(0), wrapper)


def test_read_scalars_devices_and_dtypes():
    values = [torch.tensor(1.5), 3, torch.tensor(2, dtype=torch.int64),
              torch.tensor([0.1], dtype=torch.float16), 'x',
              torch.tensor(True), torch.tensor(0.1, dtype=torch.bfloat16),
              np.float32(0.5)]
    expected = [v.item() if isinstance(v, torch.Tensor) else v
                for v in values]
    with CountConversions() as mode:
        out = read_scalars(values)
    assert out == expected
    assert [type(v) for v in out] == [type(v) for v in expected]
    # float16/bfloat16/float32 together; int64; bool: three reads.
    assert [c[0] for c in mode.calls] == ['tolist'] * 3


def test_hook_arguments():
    with pytest.raises(ValueError, match='max_pending'):
        DeferredRuntimeInfoHook(max_pending=0)

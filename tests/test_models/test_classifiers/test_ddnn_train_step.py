# Copyright (c) mmekd contributors. All rights reserved.
"""The memory-efficient DDNNClassifier.train_step equals MMEngine's simple
step (one backward of the summed losses): losses, gradients, parameters and
BatchNorm statistics, in float64."""
import copy
import gc

import pytest
import torch
from mmekd.engine.optim import SafeOptimWrapper
from mmpretrain.structures import DataSample

from mmekd.registry import MODELS
from mmekd.utils.memory_meters import LiveMemoryMeter, SavedTensorMeter


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny ops: OpenMP threads only contend (100x slower on a busy host).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(sub_depths=((2, 2, 1, 1), (1, 1, 1, 1)), depth=34,
           stage_blocks=(3, 3, 2, 2), **kwargs):
    # A narrow net with few blocks: the tree logic, not the size, matters.
    backbone = dict(
        type='mmekd.DepthDynamicResNetCIFAR',
        depth=depth,
        stage_blocks=stage_blocks,
        stem_channels=4,
        base_channels=4,
        sub_depths=[list(s) for s in sub_depths],
        block_choice=kwargs.pop('block_choice', 'first'),
        private_norm=kwargs.pop('private_norm', False),
        out_indices=(0, 1, 2, 3))
    head = dict(
        type='mmekd.MultiNetClsHead',
        num_classes=5,
        in_channels=32 * (4 if depth >= 50 else 1),
        private_fc=kwargs.pop('private_fc', False),
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0))
    cfg = dict(
        type='mmekd.DDNNClassifier',
        backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=head,
        data_preprocessor=dict(
            type='ClsDataPreprocessor', num_classes=5, mean=[120.] * 3,
            std=[60.] * 3),
        **kwargs)
    torch.manual_seed(0)
    return MODELS.build(cfg).double()


def _data(n=4, size=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, 256, (n, 3, size, size), generator=gen,
                           dtype=torch.uint8)
    labels = torch.randint(0, 5, (n, ), generator=gen)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return dict(inputs=inputs, data_samples=samples)


class RecordingWrapper(SafeOptimWrapper):
    """Keeps the gradients seen by each optimizer step; ``scale`` multiplies
    every backward's loss (as AMP's loss scaler does) and is undone before
    the step."""

    def __init__(self, *args, scale=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = scale
        self.grads = []
        self.backward_calls = 0

    def backward(self, loss, **kwargs):
        self.backward_calls += 1
        super().backward(loss * self.scale, **kwargs)

    def step(self, **kwargs):
        grads = {}
        for g, group in enumerate(self.optimizer.param_groups):
            for i, p in enumerate(group['params']):
                if p.grad is not None:
                    p.grad.div_(self.scale)
                    grads[(g, i)] = p.grad.clone()
        self.grads.append(grads)
        super().step(**kwargs)


def _run(model, mode, steps=1, accumulative_counts=1, scale=1.0):
    model = copy.deepcopy(model)
    model.train_step_mode = mode
    model.train()
    wrapper = RecordingWrapper(
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        accumulative_counts=accumulative_counts,
        scale=scale)
    log = [model.train_step(_data(seed=i + 1), wrapper) for i in range(steps)]
    return model, wrapper, log, wrapper.grads


def _assert_same(model_a, model_b, log_a, log_b, grads_a, grads_b,
                 tol=1e-10):
    for la, lb in zip(log_a, log_b):
        assert set(la) == set(lb)
        for k in la:
            torch.testing.assert_close(la[k], lb[k], rtol=tol, atol=tol)
    assert len(grads_a) == len(grads_b) >= 1
    for ga, gb in zip(grads_a, grads_b):
        assert set(ga) == set(gb)
        for k in ga:
            torch.testing.assert_close(
                ga[k], gb[k], rtol=tol, atol=tol, msg=f'grad of {k}')
    sa, sb = model_a.state_dict(), model_b.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=tol, atol=tol,
                                   msg=f'state {k}')


@pytest.mark.parametrize('kwargs', [
    dict(),
    # a sub-net that ends on the teacher's path (pending student) and one
    # that shares the teacher's stage-0 output (a distilled shared feature)
    dict(sub_depths=((3, 3, 2, 1), (3, 2, 1, 1))),
    dict(block_choice='spread', stage_blocks=(4, 2, 2, 2),
         sub_depths=((3, 2, 1, 2), (2, 1, 1, 1))),
    dict(private_norm=True, private_fc=True),
    dict(private_norm='stats'),
    dict(private_norm='stats', sub_depths=((3, 3, 2, 1), (3, 2, 1, 1))),
    dict(kl_loss=None, at_loss=None),
    dict(at_stages=(1, 3)),
    dict(depth=50, stage_blocks=(2, 2, 2, 2), sub_depths=((1, 1, 1, 1), ),
         channels_last=True),
    # the loss levers (docs/levers.md)
    dict(sub_ce_weight=0.0),
    dict(sub_ce_weight=0.3, full_loss_weight=0.5, kl_topk=3),
    dict(train_nets='sandwich', private_norm=True, private_fc=True),
    dict(train_nets='sandwich_random', private_norm='stats',
         sub_depths=((2, 2, 2, 1), (1, 1, 1, 1), (3, 2, 1, 1))),
    # Adaptive Depth Networks: sandwich, distillation-only sub-net, T = 1
    dict(train_nets='sandwich', sub_ce_weight=0.0, full_loss_weight=0.5,
         kl_loss=dict(type='mmekd.KLDivLoss', tau=1.0, loss_weight=0.5),
         at_loss=None, private_norm=True,
         sub_depths=((2, 2, 1, 1), (3, 2, 2, 1))),
])
def test_memory_efficient_equals_simple(kwargs, randomize_norms):
    model = randomize_norms(_model(**kwargs))
    ref = _run(model, 'simple')
    got = _run(model, 'memory_efficient')
    # Both copies draw the nets of their first step (sandwich_random).
    nets = model.nets_to_train()
    # The log keys are all terms of compute_losses plus the total.
    assert {k for k in got[2][0] if k != 'loss'} >= {
        f'loss_ce_{n}' for n in nets if n == 'full' or model.ekd.sub_ce_weight}
    assert not any(k.endswith(n) for k in got[2][0]
                   for n in set(model.net_names) - set(nets))
    _assert_same(got[0], ref[0], got[2], ref[2], got[3], ref[3])
    assert ref[1].backward_calls == 1
    # one backward per net; the shared segments use autograd directly
    assert got[1].backward_calls == len(nets)


def test_loss_scaling_and_accumulation():
    model = _model()
    ref = _run(model, 'simple', steps=3, accumulative_counts=2, scale=512.)
    got = _run(model, 'memory_efficient', steps=3, accumulative_counts=2,
               scale=512.)
    # 3 iterations with accumulation 2: one step after 2, none after 3
    assert got[1].inner_count == ref[1].inner_count == 3
    assert len(got[3]) == len(ref[3]) == 1
    _assert_same(got[0], ref[0], got[2], ref[2], got[3], ref[3])
    # the 3rd iteration's gradients wait in .grad for the next step
    for (name, pa), pb in zip(got[0].named_parameters(),
                              ref[0].parameters()):
        if pb.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-10,
                                       atol=1e-10)


def test_autocast_step_runs_close_to_simple():
    """Forward under (CPU bf16) autocast, as AmpOptimWrapper's
    optim_context does; backward must run outside it."""

    class AutocastWrapper(RecordingWrapper):

        def optim_context(self, model):
            return torch.autocast('cpu', dtype=torch.bfloat16)

    model = _model().float()
    out = {}
    for mode in ('simple', 'memory_efficient', 'float64'):
        m = copy.deepcopy(model)
        m.train_step_mode = 'simple' if mode == 'float64' else mode
        if mode == 'float64':  # the exact gradient, no autocast
            m.double()
        wrapper = (RecordingWrapper if mode == 'float64' else
                   AutocastWrapper)(torch.optim.SGD(m.parameters(), lr=0.1))
        out[mode] = (m.train_step(_data(), wrapper), wrapper.grads[0])
    (log_a, g_a), (log_b, g_b) = out['simple'], out['memory_efficient']
    g_exact = out['float64'][1]
    # Same forward ops in the same order: same losses.
    for k in log_a:
        torch.testing.assert_close(log_a[k], log_b[k], rtol=1e-5, atol=1e-5)
    # bf16 gradients summed in another order differ by a few % on this
    # tiny random net (up to 5 % on AVX2, whose CPUs have no bf16
    # convolution in oneDNN), while bf16 itself puts both 50-100 % away
    # from the exact gradient: the two steps must agree to a tenth of
    # bf16's own error, or to bf16's unit roundoff (2^-8) where that error
    # is small (the fc bias).
    assert set(g_a) == set(g_b) == set(g_exact)

    def rel(x, y):
        return float((x - y).norm() / y.norm().clamp_min(1e-12))

    for k in g_a:
        assert g_a[k].dtype == torch.float32
        bf16_error = rel(g_a[k].double(), g_exact[k])
        assert rel(g_b[k], g_a[k]) < max(0.1 * bf16_error, 2**-8), (
            k, rel(g_b[k], g_a[k]), bf16_error)


def test_memory_efficient_keeps_fewer_activations():
    """Peak bytes saved for backward (a device-independent proxy for the
    activation memory) are lower than the simple step's."""
    model = _model().float()
    peaks = {}
    for mode in ('simple', 'memory_efficient'):
        m = copy.deepcopy(model)
        m.train_step_mode = mode
        wrapper = SafeOptimWrapper(torch.optim.SGD(m.parameters(), lr=0.1))
        with SavedTensorMeter(m) as meter:
            m.train_step(_data(n=8, size=16), wrapper)
        peaks[mode] = meter.peak
    assert peaks['memory_efficient'] < 0.8 * peaks['simple'], peaks


class _CyclicGCOff:
    """Python's cyclic garbage collector off (collected first): only
    reference counting frees objects, as between its runs in training."""

    def __enter__(self):
        gc.collect()
        self.enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.enabled:
            gc.enable()


@pytest.mark.parametrize('mode', ['memory_efficient', 'simple'])
@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(sub_depths=((3, 3, 2, 1), (3, 2, 1, 1))),
    dict(private_norm=True),
    dict(private_norm='stats'),
])
def test_step_leaves_no_reference_cycle(mode, kwargs):
    """Nothing of a step waits for the cyclic garbage collector: a cycle
    through the step's closures kept every net's stage outputs alive for
    steps, hundreds of MB on a GPU."""
    model = _model(**kwargs).float()
    model.train_step_mode = mode
    wrapper = SafeOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    data = _data(n=8, size=16)
    model.train_step(data, wrapper)
    debug, n_garbage = gc.get_debug(), len(gc.garbage)
    with _CyclicGCOff():
        model.train_step(data, wrapper)
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            cyclic = gc.garbage[n_garbage:]
            tensors = [o for o in cyclic if torch.is_tensor(o)]
            del gc.garbage[n_garbage:]
        finally:
            gc.set_debug(debug)
    assert not tensors, (
        f'{len(tensors)} tensors ({sum(t.numel() for t in tensors)} '
        'elements) in reference cycles after the step')


def test_memory_efficient_live_memory():
    """Live CPU tensor memory (not only what autograd saves): the
    memory-efficient step peaks below the simple step and near the full net
    trained alone, frees what it allocated, and does not grow over steps."""
    model = _model().float()
    full_only = _model(sub_depths=()).float()
    peaks, ends = {}, {}

    def live_bytes(fn):
        with LiveMemoryMeter() as meter:
            fn()
        if not meter.num_events:
            pytest.skip('the profiler recorded no CPU allocations')
        return meter.peak, meter.end

    for name, base, mode in [('simple', model, 'simple'),
                             ('memory_efficient', model,
                              'memory_efficient'),
                             ('full', full_only, 'simple')]:
        m = copy.deepcopy(base)
        m.train_step_mode = mode
        wrapper = SafeOptimWrapper(
            torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
        data = _data(n=8, size=16)
        m.train_step(data, wrapper)  # momentum buffers exist from here on
        peaks[name], _ = live_bytes(lambda: m.train_step(data, wrapper))
        peaks[f'{name} x3'], ends[name] = live_bytes(
            lambda: [m.train_step(data, wrapper) for _ in range(3)])
    got = peaks['memory_efficient']
    # Measured: 1041 KB, full 966 KB, simple 1476 KB; with the cycle, 3
    # steps peaked at 1410 KB and each step left 185 KB behind.
    assert got < 0.8 * peaks['simple'], peaks
    assert got < 1.15 * peaks['full'], peaks
    for name in ('simple', 'memory_efficient', 'full'):
        assert peaks[f'{name} x3'] <= 1.01 * peaks[name], (name, peaks)
        assert ends[name] < 0.01 * peaks[name], (name, ends, peaks)


def test_bad_train_step_mode():
    with pytest.raises(ValueError, match='train_step_mode'):
        _model(train_step_mode='fast')

# Copyright (c) mmekd contributors. All rights reserved.
"""DDNNClassifier(compile_step=...): the step's functions of tensors compile
into one graph each (the simple step's forward + losses; each segment of the
memory-efficient step), with no graph break and no recompilation, and train
exactly as the eager step (losses, gradients, weights, BatchNorm
statistics), loss scaling still going through the optim wrapper."""
import copy

import pytest
import torch
from mmekd.engine.optim import SafeOptimWrapper
from mmpretrain.structures import DataSample

from mmekd.models.classifiers.compiled_step import (dynamo_counts,
                                                    parse_compile_step)
from mmekd.models.classifiers.memory_efficient_step import build_plan
from mmekd.registry import MODELS

# Compiled code can crash the interpreter: each module of compile tests runs
# in a child (tests/isolation.py).
pytestmark = pytest.mark.isolated


def _cfg(mode, sub=((1, 1, 1, 1), (2, 1, 1, 1)), stage_blocks=(2, 1, 1, 2),
         **kwargs):
    return dict(
        type='mmekd.DDNNClassifier',
        backbone=dict(
            type='mmekd.DepthDynamicResNetCIFAR',
            depth=18,
            stage_blocks=stage_blocks,
            stem_channels=2,
            base_channels=2,
            sub_stage_blocks=[list(s) for s in sub],
            out_indices=(0, 1, 2, 3)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='mmekd.MultiNetClsHead', num_classes=3,
                  in_channels=16),
        data_preprocessor=dict(
            type='ClsDataPreprocessor', num_classes=3, mean=[120.] * 3,
            std=[60.] * 3),
        train_step_mode=mode,
        **kwargs)


def _build(cfg):
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.train()


class ScaledOptimWrapper(SafeOptimWrapper):
    """AMP-style loss scaling on CPU: backward of ``loss * scale``, the
    gradients unscaled before the step. A step that bypassed the wrapper's
    backward would update with 1/scale of the gradient."""
    scale = 1024.0

    def backward(self, loss, **kwargs):
        self.backward_calls = getattr(self, 'backward_calls', 0) + 1
        super().backward(loss * self.scale, **kwargs)

    def step(self, **kwargs):
        for group in self.optimizer.param_groups:
            for p in group['params']:
                if p.grad is not None:
                    p.grad.div_(self.scale)
        super().step(**kwargs)


def _wrapper(model):
    return ScaledOptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9,
                        weight_decay=5e-4))


def _batch(seed):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        inputs=torch.randint(0, 256, (4, 3, 8, 8), generator=gen,
                             dtype=torch.uint8),
        data_samples=[DataSample().set_gt_label(i % 3) for i in range(4)])


def _train_pair(cfg, backend, steps=3):
    eager, compiled = _build(cfg), _build(
        dict(cfg, compile_step=dict(backend=backend)))
    compiled.load_state_dict(eager.state_dict())
    we, wc = _wrapper(eager), _wrapper(compiled)
    logs = []
    for i in range(steps):
        a = eager.train_step(_batch(i), we)
        b = compiled.train_step(_batch(i), wc)
        logs.append((a, b))
    return eager, compiled, we, wc, logs


def _assert_same(eager, compiled, logs, atol):
    for a, b in logs:
        assert set(a) == set(b)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=atol)
    for (name, p), q in zip(eager.named_parameters(),
                            compiled.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=atol, msg=name)
    for (name, b), c in zip(eager.named_buffers(), compiled.buffers()):
        torch.testing.assert_close(c, b, rtol=1e-5, atol=atol, msg=name)


@pytest.mark.parametrize('mode', ['memory_efficient', 'simple'])
def test_compiled_step_equals_eager_one_graph_each(mode):
    """aot_eager: dynamo + AOTAutograd (the compiled backward) with eager
    kernels, so any difference is the capture's, not the kernels'."""
    torch._dynamo.reset()
    before = dynamo_counts()
    cfg = _cfg(mode)
    eager, compiled, we, wc, logs = _train_pair(cfg, 'aot_eager')
    _assert_same(eager, compiled, logs, atol=1e-6)
    counts = dynamo_counts()
    assert counts['graph_breaks'] == before['graph_breaks']
    # simple: one graph; memory-efficient: one per segment of the tree,
    # and one per net finished on its own (here sub1, a prefix of full).
    plan = build_plan(compiled, compiled.net_names)
    on_own = sum(len(s.ends) - (s.finish is not None) for s in plan.segments)
    assert on_own == 1
    expected = 1 if mode == 'simple' else len(plan.segments) + on_own
    assert compiled._compiler.num_functions == expected
    assert compiled._compiler.cache_entries() == expected
    # Every backward went through the wrapper (loss scaling).
    assert wc.backward_calls == we.backward_calls
    # More steps, another batch of the same shape: no recompilation.
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in range(5):
            compiled.train_step(_batch(10 + i), wc)
    assert compiled._compiler.cache_entries() == expected
    assert dynamo_counts()['graph_breaks'] == before['graph_breaks']


def test_compiled_memory_efficient_step_with_a_pending_student():
    """A sub-net whose path is a prefix of the full net's ends in a segment
    shared with the teacher: it is finished (its own compiled graph) once
    the teacher is done."""
    torch._dynamo.reset()
    cfg = _cfg('memory_efficient', sub=((2, 1, 1, 1), (1, 1, 1, 1)))
    model = _build(cfg)
    plan = build_plan(model, model.net_names)
    shared_ends = [s for s in plan.segments if s.cut and s.ends]
    assert [s.ends for s in shared_ends] == [('sub0', )]
    eager, compiled, _, _, logs = _train_pair(cfg, 'aot_eager', steps=2)
    _assert_same(eager, compiled, logs, atol=1e-6)
    # the segments, plus the pending student's finish
    assert compiled._compiler.num_functions == len(plan.segments) + 1


def test_compiled_step_inductor_default_mode():
    """The real compiler (inductor's CPU kernels) on the default step."""
    torch._dynamo.reset()
    cfg = _cfg('memory_efficient', sub=((1, 1, 1, 1), ),
               stage_blocks=(2, 1, 1, 1))
    eager, compiled, _, _, logs = _train_pair(cfg, 'inductor')
    # Fused kernels round differently: float32 closeness, not bits.
    _assert_same(eager, compiled, logs, atol=1e-5)
    assert compiled._compiler.compile_seconds > 0


def test_plan_of_the_default_nets():
    model = _build(_cfg('memory_efficient', sub=((2, 1, 1, 1), ),
                        stage_blocks=(3, 2, 2, 2)))
    plan = build_plan(model, model.net_names)
    # stem + the two shared blocks, cut where the nets part; then one
    # segment per net, each finishing its net (teacher first).
    assert [(s.stem, s.nets, [b[:2] for b in s.blocks], s.cut, s.finish)
            for s in plan.segments] == [
                (True, ('full', 'sub0'), [(0, 0), (0, 1)], True, None),
                (False, ('full', ), [(0, 2), (1, 0), (1, 1), (2, 0), (2, 1),
                                     (3, 0), (3, 1)], False, 'full'),
                (False, ('sub0', ), [(1, 0), (2, 0), (3, 0)], False, 'sub0'),
            ]
    assert plan.segments[0].children == (1, 2)
    assert plan.roots == (0, )


def test_compiled_step_keeps_eval_eager():
    model = _build(_cfg('simple', compile_step=True))
    model.eval()
    with torch.no_grad():
        model(torch.rand(2, 3, 8, 8) * 255, mode='tensor')
    assert model._compiler.num_functions == 0


@pytest.mark.parametrize('value, error, match', [
    ('yes', TypeError, 'compile_step must be a bool or a dict'),
    (dict(backend='inductor', fullgraph=False), ValueError,
     r"unknown keys \['fullgraph'\]"),
    (dict(mode='fast'), ValueError, 'compile_step.mode must be'),
    (dict(mode='max-autotune', options={'a': 1}), ValueError,
     'mode or options'),
    (dict(options=3), TypeError, 'compile_step.options must be a dict'),
])
def test_compile_step_is_checked(value, error, match):
    with pytest.raises(error, match=match):
        parse_compile_step(value)
    with pytest.raises(error, match=match):
        MODELS.build(_cfg('simple', compile_step=value))


def test_compile_step_defaults():
    assert parse_compile_step(None) is None
    assert parse_compile_step(False) is None
    assert parse_compile_step(True) == dict(
        backend='inductor', mode=None, options=None)


def test_compiled_model_deepcopies_without_its_graphs():
    """EMA hooks and export deep-copy the model: the copy compiles its own
    graphs when it trains."""
    model = _build(_cfg('simple', compile_step=dict(backend='aot_eager')))
    model.train_step(_batch(0), _wrapper(model))
    copied = copy.deepcopy(model)
    assert copied._compiler is not model._compiler
    assert copied._compiler.num_functions == 0
    assert copied.compile_step == model.compile_step


def test_cuda_graphs_refused_off_a_gpu():
    model = _build(_cfg('memory_efficient',
                        compile_step=dict(mode='reduce-overhead')))
    with pytest.raises(ValueError, match="reduce-overhead' captures CUDA "
                       'graphs, but the batch is on cpu'):
        model.train_step(_batch(0), _wrapper(model))


def test_a_new_batch_shape_warns_and_compiles_once_more():
    model = _build(_cfg('simple', compile_step=dict(backend='aot_eager')))
    wrapper = _wrapper(model)
    model.train_step(_batch(0), wrapper)
    partial = _batch(1)
    partial['inputs'] = partial['inputs'][:3]
    partial['data_samples'] = partial['data_samples'][:3]
    with pytest.warns(UserWarning, match=r'batches of shape \(4, 3, 8, 8\), '
                      r'got \(3, 3, 8, 8\): set train_dataloader.drop_last'):
        model.train_step(partial, wrapper)
    assert model._compiler.cache_entries() == 2


def test_a_new_batch_shape_is_refused_with_cuda_graphs():
    from types import SimpleNamespace

    from mmekd.models.classifiers.compiled_step import StepCompiler
    compiler = StepCompiler(parse_compile_step(dict(mode='reduce-overhead')))

    def batch(n):  # what check_input reads of a CUDA batch
        return SimpleNamespace(device=SimpleNamespace(type='cuda'),
                               shape=(n, 3, 8, 8))

    model = torch.nn.Linear(1, 1)
    compiler.check_input(batch(4), model)
    compiler.check_input(batch(4), model)
    with pytest.raises(ValueError, match=r'got \(3, 3, 8, 8\).*CUDA graphs '
                       'hold one shape'):
        compiler.check_input(batch(3), model)

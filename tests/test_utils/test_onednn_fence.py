# Copyright (c) mmekd contributors. All rights reserved.
"""The oneDNN fence (mmekd/utils/onednn_fence.py): which convolutions it
names, and what compile_step, channels_last and MMEngine's compile do with
them. The kernel itself is never run here (tests/test_upstream does, in a
child interpreter)."""
import pytest
import torch
from mmekd.engine.optim import SafeOptimWrapper
from mmpretrain.structures import DataSample

from mmekd.models.classifiers.compiled_step import (StepCompiler,
                                                    parse_compile_step)
from mmekd.registry import MODELS
from mmekd.utils.onednn_fence import (channel_block, onednn_hazards,
                                      strided_1x1_convs)


def _ddnn(width, **kwargs):
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='mmekd.DDNNClassifier',
        backbone=dict(type='mmekd.DepthDynamicResNetCIFAR', depth=18,
                      stem_channels=width, base_channels=width,
                      sub_stage_blocks=[[1, 1, 1, 1]],
                      out_indices=(0, 1, 2, 3)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='mmekd.MultiNetClsHead', num_classes=3,
                  in_channels=8 * width),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=3),
        **kwargs)).train()


def _step(model):
    data = dict(
        inputs=torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8),
        data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    wrapper = SafeOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    return model.train_step(data, wrapper)


def test_names_the_strided_1x1_convolutions_below_the_block():
    model = _ddnn(4)
    # ResNet's projections: 1x1, stride 2 into stages 2-4, with 4, 8 and
    # 16 input channels.
    assert strided_1x1_convs(model, 8) == ['backbone.layer2.0.downsample.0']
    assert strided_1x1_convs(model, 16) == [
        'backbone.layer2.0.downsample.0', 'backbone.layer3.0.downsample.0']
    assert strided_1x1_convs(model, 4) == []
    # a stride-1 1x1 or a 3x3 stride-2 conv is not the kernel's case
    convs = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 1),
                                torch.nn.Conv2d(2, 4, 3, stride=2))
    assert strided_1x1_convs(convs, 8) == []
    # grouped: channels per group count
    assert strided_1x1_convs(
        torch.nn.Conv2d(16, 16, 1, stride=2, groups=4), 8) == ['']


def test_hazards_only_where_onednn_runs_the_gradient():
    model = _ddnn(1)
    assert onednn_hazards(model, torch.device('cpu')) != [] or \
        not torch.backends.mkldnn.is_available()
    assert onednn_hazards(model, 'cuda') == []
    with torch.backends.mkldnn.flags(enabled=False):
        assert onednn_hazards(model, 'cpu') == []
    assert onednn_hazards(model.double(), 'cpu') == []  # ATen's kernels
    frozen = _ddnn(1)
    frozen.requires_grad_(False)  # no weight gradient
    assert onednn_hazards(frozen, 'cpu') == []


needs_onednn = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason='no oneDNN')


@needs_onednn
def test_channels_last_training_is_refused_below_the_block():
    model = _ddnn(2, channels_last=True)
    with pytest.raises(ValueError, match=r'channels_last=True on the CPU '
                       r'with oneDNN would back-propagate \d strided 1x1 '
                       r'convolution\(s\) with fewer than \d+ input channels '
                       r'\(backbone.layer2.0.downsample.0, .*widen the nets '
                       r'to >= \d+ channels'):
        _step(model)
    # evaluation is not the kernel's case; wide enough trains
    model.eval()
    with torch.no_grad():
        model(torch.rand(2, 3, 8, 8), mode='tensor')
    _step(_ddnn(channel_block(), channels_last=True))


@needs_onednn
def test_a_whole_step_compiled_by_mmengine_is_refused_below_the_block():
    model = _ddnn(2)
    # what train_step passes while dynamo traces it (MMEngine's compile)
    with pytest.raises(ValueError, match="MMEngine's compile=True on the "
                       'CPU with oneDNN'):
        model._fence_channels_last(True)
    _ddnn(channel_block())._fence_channels_last(True)


def _compiler(**cfg):
    return StepCompiler(parse_compile_step(cfg or True))


@needs_onednn
def test_compile_step_keeps_fenced_convolutions_contiguous():
    batch = torch.zeros(2, 3, 8, 8)
    compiler = _compiler()
    compiler.check_input(batch, _ddnn(2))
    assert compiler.lowering() == dict(
        mode=None, options=dict(layout_optimization=False))
    # a mode is spelled out as its options
    compiler = _compiler(mode='max-autotune-no-cudagraphs')
    compiler.check_input(batch, _ddnn(2))
    assert compiler.lowering() == dict(mode=None, options=dict(
        max_autotune=True, coordinate_descent_tuning=True,
        layout_optimization=False))
    # nothing to fence: the configured settings
    compiler = _compiler(mode='max-autotune-no-cudagraphs')
    compiler.check_input(batch, _ddnn(channel_block()))
    assert compiler.lowering() == dict(mode='max-autotune-no-cudagraphs',
                                       options=None)
    # other backends do not lay out convolutions
    compiler = _compiler(backend='aot_eager')
    compiler.check_input(batch, _ddnn(2))
    assert compiler.lowering() == dict(mode=None, options=None)


@needs_onednn
def test_compile_step_refuses_to_force_the_layout():
    compiler = _compiler(options=dict(layout_optimization=True))
    with pytest.raises(ValueError, match='compile_step.options '
                       'layout_optimization=True would make 1 strided 1x1'):
        compiler.check_input(torch.zeros(2, 3, 8, 8), _ddnn(4))


def test_nothing_compiles_before_the_first_batch():
    with pytest.raises(RuntimeError, match='check_input'):
        _compiler()('simple', 0, lambda x: x)

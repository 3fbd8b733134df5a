# Copyright (c) mmekd contributors. All rights reserved.
"""An upstream bug, reproduced in a few lines of pure torch (no mmekd), and
mmekd's fence around it (``mmekd/utils/onednn_fence.py`` explains both).

torch 2.14.1 (oneDNN 3.12), CPU capability AVX2: the weight gradient of a
1x1 convolution with stride 2 on a channels-last input of fewer than 8
channels writes past oneDNN's workspace and the process aborts. The
reproduction is an expected failure there; where it stops failing (a fixed
torch), the strict xfail turns red so the fence can be revisited.
"""
import os
import re
import subprocess
import sys

import pytest
import torch

REPRODUCTION = '''
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
for _ in range(200):
    x = torch.randn(2, CHANNELS, 16, 16).to(memory_format=torch.channels_last)
    w = torch.randn(8, CHANNELS, 1, 1).to(memory_format=torch.channels_last)
    w.requires_grad_()
    F.conv2d(x, w, stride=2).sum().backward()
print('ok')
'''

AVX2 = torch.backends.cpu.get_cpu_capability() == 'AVX2'
TORCH_2_14 = torch.__version__.startswith('2.14.')


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code],
                          env=dict(os.environ, **env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)


@pytest.mark.skipif(not AVX2, reason='measured on AVX2 only: other '
                    'capabilities run other oneDNN kernels')
@pytest.mark.xfail(TORCH_2_14, strict=True,
                   reason='torch 2.14.1, AVX2: oneDNN jit_1x1:avx2 backward '
                   'weights overflows its workspace (heap corruption)')
def test_upstream_strided_1x1_channels_last_below_8_channels():
    proc = _run(REPRODUCTION.replace('CHANNELS', '4'))
    assert proc.returncode == 0 and proc.stdout.endswith('ok\n'), (
        f'exit status {proc.returncode}: {proc.stdout[-300:]}')


def test_upstream_same_code_at_8_channels_runs():
    """The control: the same loop at 8 channels (oneDNN's AVX2 block)."""
    proc = _run(REPRODUCTION.replace('CHANNELS', '8'))
    assert proc.returncode == 0, proc.stdout[-300:]


# ``mb2_ic4oc8_ih16oh8kh1sh2dh0ph0_iw16ow8kw1sw2dw0pw0`` in a oneDNN
# verbose line of a backward-weights convolution with an nhwc source.
NHWC_BWD_WEIGHTS = re.compile(
    r'convolution,[^,]+,backward_weights,src:\w+::blocked:acdb:.*?'
    r'ic(\d+)oc\d+_.*?kh(\d+)sh(\d+).*?kw(\d+)sw(\d+)')


def _nhwc_strided_1x1(verbose: str):
    """``in_channels`` of every strided 1x1 nhwc weight gradient oneDNN
    ran, from its verbose output."""
    found = []
    for m in NHWC_BWD_WEIGHTS.finditer(verbose):
        ic, kh, sh, kw, sw = (int(g) for g in m.groups())
        if kh == kw == 1 and (sh > 1 or sw > 1):
            found.append(ic)
    return found


COMPILED_STEP = '''
import torch
import mmekd, mmekd.models  # noqa
from mmekd.engine.optim import SafeOptimWrapper
from mmpretrain.structures import DataSample
from mmekd.registry import MODELS

torch.set_num_threads(1)
torch.manual_seed(0)
model = MODELS.build(dict(
    type='mmekd.DDNNClassifier',
    backbone=dict(type='mmekd.DepthDynamicResNetCIFAR', depth=18,
                  stem_channels=2, base_channels=2,
                  sub_stage_blocks=[[1, 1, 1, 1]], out_indices=(0, 1, 2, 3)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='mmekd.MultiNetClsHead', num_classes=3, in_channels=16),
    data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=3),
    train_step_mode='STEP_MODE', compile_step=True)).train()
wrapper = SafeOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
data = dict(inputs=torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8),
            data_samples=[DataSample().set_gt_label(i) for i in range(2)])
for _ in range(3):
    model.train_step(data, wrapper)
print('LAYOUT', model._compiler.lowering())
# The control: a safe nhwc strided 1x1 weight gradient (8 channels), which
# the parser must see.
x = torch.randn(2, 8, 16, 16).to(memory_format=torch.channels_last)
w = torch.randn(8, 8, 1, 1).to(memory_format=torch.channels_last)
w.requires_grad_()
torch.nn.functional.conv2d(x, w, stride=2).sum().backward()
print('done')
'''


@pytest.mark.isolated
@pytest.mark.slow
def test_compiled_step_never_reaches_the_kernel(tmp_path):
    """The compiled DDNN step (simple: one graph, the quickest to compile;
    the fence is the compiler's, the same for every step mode) at 2 base
    channels on the CPU: oneDNN runs no nhwc strided 1x1 weight gradient
    below its channel block."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip('no oneDNN in this torch')
    proc = _run(COMPILED_STEP.replace('STEP_MODE', 'simple'), ONEDNN_VERBOSE='1',
                TORCHINDUCTOR_CACHE_DIR=str(tmp_path / 'inductor'))
    assert proc.returncode == 0 and 'done' in proc.stdout, proc.stdout[-2000:]
    assert "'layout_optimization': False" in proc.stdout
    assert 'backward_weights' in proc.stdout  # oneDNN ran the gradients
    # the control is the only nhwc strided 1x1 weight gradient
    assert _nhwc_strided_1x1(proc.stdout) == [8]

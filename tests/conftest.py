# Copyright (c) mmekd contributors. All rights reserved.
"""Shared fixtures of the mmekd test suite."""
import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmekd  # noqa: F401  (registers the safe checkpoint loader)
import mmekd.models  # noqa: F401  (registers the models)

# The tests use tiny tensors: extra threads only add overhead, and on a busy
# machine OpenMP threads waiting for each other make them ~100x slower.
torch.set_num_threads(1)


def _randomize_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics.

    Freshly built ResNets have weight 1, bias 0, mean 0 and var 1 (or weight 0
    after ``zero_init_residual``), which makes a wrong norm, a skipped block or
    a missing gradient look right; random values make them show.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if not isinstance(m, _BatchNorm):
                continue
            n = m.num_features
            # Only the norm's own tensors: a PrivateBatchNorm2d's copies (and
            # a PrivateStatsBatchNorm2d's statistics, without affine
            # parameters) are modules of their own and get values of their
            # own.
            if m.affine:
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return module


@pytest.fixture
def randomize_norms():
    """``randomize_norms(module, seed=0)``: see :func:`_randomize_norms`."""
    return _randomize_norms


@pytest.fixture
def tiny_ddnn_cfg() -> dict:
    """Config of a tiny CIFAR-style DDNN: ResNet-18 with 4 base channels
    containing ResNet-10 ``[1, 1, 1, 1]``, 3 classes, 32 features."""
    return dict(
        type='mmekd.DDNNClassifier',
        backbone=dict(
            type='mmekd.DepthDynamicResNetCIFAR',
            depth=18,
            stem_channels=4,
            base_channels=4,
            sub_depths=[[1, 1, 1, 1]],
            out_indices=(0, 1, 2, 3)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='mmekd.MultiNetClsHead', num_classes=3, in_channels=32))

# ``@pytest.mark.isolated``: the test runs in a child interpreter.
pytest_plugins = ['isolation']

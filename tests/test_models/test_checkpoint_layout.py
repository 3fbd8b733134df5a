# Copyright (c) mmekd contributors. All rights reserved.
"""Checkpoints written by earlier code keep loading and computing the same.

``tests/fixtures/ddnn_a8cced3.pt`` was written by the code at commit a8cced3
(``tests/fixtures/make_ddnn_a8cced3.py``): a tiny DDNN in each norm mode
(``private_norm=False``, ``'stats'``, ``True``) with its state dict, an
input and every net's eval logits, and one float64 training step of both
step modes (its losses and every tensor after the step).
"""
import copy
import os.path as osp

import pytest
import torch
from mmengine.model import BaseDataPreprocessor
from mmekd.engine.optim import SafeOptimWrapper
from mmpretrain.structures import DataSample

from mmekd.registry import MODELS
from mmekd.utils import safe_load

FIXTURE = osp.join(osp.dirname(__file__), '..', 'fixtures',
                   'ddnn_a8cced3.pt')


@pytest.fixture(scope='module')
def fixture():
    return safe_load(FIXTURE)


@pytest.mark.parametrize('mode', ['False', 'stats', 'True'])
def test_old_checkpoint_loads_with_identical_logits(fixture, mode):
    rec = fixture[mode]
    model = MODELS.build(rec['cfg'])
    assert list(model.state_dict()) == list(rec['state_dict'])  # layout
    model.load_state_dict(rec['state_dict'], strict=True)
    model.eval()
    with torch.no_grad():
        logits, _ = model.forward_nets(rec['inputs'], model.net_names)
    assert logits.keys() == rec['logits'].keys()
    for net, expected in rec['logits'].items():
        assert torch.equal(logits[net], expected), net


@pytest.mark.parametrize('mode', ['False', 'stats', 'True'])
@pytest.mark.parametrize('step_mode', ['simple', 'memory_efficient'])
def test_training_step_equals_the_old_one(fixture, mode, step_mode):
    """Losses, and every weight and BatchNorm statistic after one SGD step
    (so every gradient), equal the old code's in float64."""
    rec = fixture[mode]
    model = MODELS.build(dict(rec['cfg'], train_step_mode=step_mode))
    model.load_state_dict(rec['state_dict'], strict=True)
    model.data_preprocessor = BaseDataPreprocessor()  # keep float64
    model = model.double().train()
    wrapper = SafeOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    batch = dict(inputs=rec['batch_inputs'].clone(),
                 data_samples=[DataSample().set_gt_label(i % 3)
                               for i in range(4)])
    log_vars = model.train_step(copy.deepcopy(batch), wrapper)
    expected = rec['steps'][step_mode]
    assert log_vars.keys() == expected['losses'].keys()
    for key, value in expected['losses'].items():
        torch.testing.assert_close(log_vars[key], value, rtol=1e-12,
                                   atol=1e-14, msg=key)
    state = model.state_dict()
    for key, value in expected['state_dict'].items():
        torch.testing.assert_close(state[key], value, rtol=1e-12,
                                   atol=1e-14, msg=key)

# Copyright (c) mmekd contributors. All rights reserved.
"""``tools/train.py --amp`` keeps the non-finite check: one NaN sample under
``--on-nonfinite skip`` skips its step and leaves every tensor as it was,
exactly as without ``--amp`` (mixed precision is bfloat16 autocast on the
CPU, ``mmekd.SafeAmpOptimWrapper``)."""
import os.path as osp

import pytest
import torch
from train_tool import assert_same_weights, finish, start_train
from tool_loader import REPO

from mmekd.utils import safe_load

DEMO = osp.join(REPO, 'configs', 'ddnn_demo_digits.py')
NAN_AT = 2  # the 0-based iteration whose first image is NaN: the last one

# A data preprocessor that poisons one image of one iteration (the test's
# own module, imported by the config).
PREPROCESSOR = '''
from mmengine.logging import MessageHub
from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.registry import MODELS


@MODELS.register_module()
class NaNAtIteration(ClsDataPreprocessor):

    def forward(self, data, training=False):
        data = super().forward(data, training)
        if training and MessageHub.get_current_instance().get_info(
                'iter') == {nan_at}:
            data['inputs'][0] = float('nan')
        return data
'''

CONFIG = '''
_base_ = [{demo!r}]
custom_imports = dict(imports=['mmekd', 'nan_preprocessor'],
                      allow_failed_imports=False)
model = dict(
    backbone=dict(stem_channels=4, base_channels=4),
    head=dict(in_channels=32),
    data_preprocessor=dict(type='NaNAtIteration', num_classes=10,
                           mean=[76.0] * 3, std=[96.0] * 3, to_rgb=False))
train_dataloader = dict(batch_size=8)
train_cfg = dict(_delete_=True, by_epoch=False, max_iters={iters})
param_scheduler = []
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=1, max_keep_ckpts=-1),
    logger=dict(interval=1))
'''


@pytest.mark.slow
@pytest.mark.parametrize('amp', [False, True])
def test_a_nan_sample_is_skipped_with_and_without_amp(tmp_path, amp):
    with open(tmp_path / 'nan_preprocessor.py', 'w') as f:
        f.write(PREPROCESSOR.format(nan_at=NAN_AT))
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(CONFIG.format(demo=DEMO, iters=NAN_AT + 1))
    work = str(tmp_path / 'work')
    out = finish(start_train(str(cfg), work, '--on-nonfinite', 'skip',
                             *(['--amp'] if amp else []),
                             python_path=str(tmp_path)))
    if amp:
        assert ('--amp: optim_wrapper.type mmekd.SafeOptimWrapper -> '
                'mmekd.SafeAmpOptimWrapper') in out
    assert f'Non-finite loss at iteration {NAN_AT + 1}' in out
    assert '1 skipped so far' in out
    # The skipped step changed nothing: weights, BatchNorm statistics and
    # counters are those after the step before.
    assert_same_weights(osp.join(work, f'iter_{NAN_AT}.pth'),
                        osp.join(work, f'iter_{NAN_AT + 1}.pth'))
    state = safe_load(osp.join(work, f'iter_{NAN_AT + 1}.pth'))['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values()
               if v.is_floating_point())
    # and the steps before it did train
    first = safe_load(osp.join(work, 'iter_1.pth'))['state_dict']
    assert any(not torch.equal(first[k], state[k]) for k in state
               if k.endswith('weight'))

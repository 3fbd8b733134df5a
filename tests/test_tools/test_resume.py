# Copyright (c) mmekd contributors. All rights reserved.
"""Exact resume from a mid-epoch, iteration-based checkpoint (DDNN)."""
import os
import os.path as osp

from train_tool import REPO, assert_same_weights, finish, start_train

from mmekd.utils import safe_load

# A tiny DDNN on 64 digits: 4 iterations per epoch, 2 epochs. Random crop and
# shuffling stay on: both must be reproduced after resuming.
CONFIG = f"""
_base_ = {osp.join(REPO, 'configs', 'ddnn_demo_digits.py')!r}
model = dict(
    backbone=dict(depth=18, stem_channels=4, base_channels=4,
                  sub_depths=[[1, 1, 1, 1]]),
    head=dict(in_channels=32))
train_dataloader = dict(batch_size=16, dataset=dict(indices=64))
train_cfg = dict(max_epochs=2)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=3, end=8),
]
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=3, max_keep_ckpts=-1,
                    save_last=True, save_best=None))
randomness = dict(seed=0, deterministic=True)
"""


def test_resume_mid_epoch_is_exact(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(CONFIG)
    full = str(tmp_path / 'full')
    finish(start_train(str(cfg), full))
    # iter_6.pth is the 2nd of the 4 iterations of epoch 2: resume there.
    ckpt = osp.join(full, 'iter_6.pth')
    meta = safe_load(ckpt)['meta']
    assert (meta['epoch'], meta['iter']) == (1, 6)
    assert 'rng_state' in safe_load(ckpt)

    resumed = str(tmp_path / 'resumed')
    out = finish(start_train(str(cfg), resumed, '--resume', ckpt))
    assert 'Resuming epoch 2 at batch 3' in out

    assert_same_weights(osp.join(full, 'iter_8.pth'),
                        osp.join(resumed, 'iter_8.pth'))
    # MMEngine alone would restart epoch 2 from its first batch and train
    # 4 more iterations (iter_9.pth, iter_10.pth), not 2.
    assert sorted(f for f in os.listdir(resumed) if f.endswith('.pth')) == [
        'iter_8.pth'
    ]

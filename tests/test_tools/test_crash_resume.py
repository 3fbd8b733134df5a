# Copyright (c) mmekd contributors. All rights reserved.
"""A training run killed with SIGKILL resumes from its last checkpoint."""
import os
import os.path as osp
import re
import time

from train_tool import REPO, finish, start_train

from mmekd.utils import safe_load

INTERVAL = 4
# 256 digits, batch 16: 16 iterations per epoch, 3 epochs.
CONFIG = f"""
_base_ = {osp.join(REPO, 'configs', 'ddnn_demo_digits.py')!r}
model = dict(
    backbone=dict(depth=18, stem_channels=4, base_channels=4,
                  sub_depths=[[1, 1, 1, 1]]),
    head=dict(in_channels=32))
train_dataloader = dict(batch_size=16, dataset=dict(indices=256))
train_cfg = dict(max_epochs=3)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval={INTERVAL}, max_keep_ckpts=1,
                    save_best=None))
"""


def test_sigkill_then_resume(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(CONFIG)
    work_dir = str(tmp_path / 'work')
    last = osp.join(work_dir, 'last_checkpoint')

    proc = start_train(str(cfg), work_dir)
    deadline = time.time() + 240
    while not osp.exists(last):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.time() < deadline, 'no checkpoint written in time'
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no cleanup, possibly in the middle of a save
    proc.communicate()
    assert proc.returncode == -9

    # last_checkpoint names a complete checkpoint.
    with open(last) as f:
        ckpt = f.read().strip()
    saved_iter = safe_load(ckpt)['meta']['iter']
    assert saved_iter >= INTERVAL and saved_iter % INTERVAL == 0

    out = finish(start_train(str(cfg), work_dir, '--resume'))
    resumed = int(re.search(r'resumed epoch: \d+, iter: (\d+)', out)[1])
    assert resumed == saved_iter
    final = safe_load(osp.join(work_dir, 'iter_48.pth'))
    assert final['meta']['iter'] == 48
    assert [f for f in os.listdir(work_dir)
            if f.endswith('.pth')] == ['iter_48.pth']

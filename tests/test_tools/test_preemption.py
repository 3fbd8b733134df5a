# Copyright (c) mmekd contributors. All rights reserved.
"""SIGTERM (what Slurm sends before killing a pre-empted job) to a real
tools/train.py run: it saves a checkpoint after the iteration in progress
and exits 143; --resume then ends with the weights of an uninterrupted
run, bit for bit."""
import os
import os.path as osp
import re
import signal

import pytest
from train_tool import REPO, assert_same_weights, finish, start_train

from mmekd.utils import safe_load

# A tiny DDNN on 256 digits, batch 16: 16 iterations per epoch, 2 epochs.
# Random crop and shuffling stay on: both must be reproduced after resuming.
CONFIG = f"""
_base_ = {osp.join(REPO, 'configs', 'ddnn_demo_digits.py')!r}
model = dict(
    backbone=dict(depth=18, stem_channels=4, base_channels=4,
                  sub_stage_blocks=[[1, 1, 1, 1]]),
    head=dict(in_channels=32))
train_dataloader = dict(batch_size=16, dataset=dict(indices=256))
train_cfg = dict(max_epochs=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(save_best=None))
randomness = dict(seed=0, deterministic=True)
"""
SIGNAL_AT = re.compile(r'Epoch\(train\) +\[1\]\[ *3/16\]')


@pytest.mark.slow
def test_sigterm_saves_and_resume_is_exact(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(CONFIG)
    full, work = str(tmp_path / 'full'), str(tmp_path / 'work')
    uninterrupted = start_train(str(cfg), full)  # meanwhile
    proc = start_train(str(cfg), work)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if SIGNAL_AT.search(line):
            proc.send_signal(signal.SIGTERM)  # in iteration 4 (or later)
            break
    out = ''.join(seen) + finish(proc, returncode=128 + signal.SIGTERM)

    saved = re.search(r'SIGTERM: saved (\S+) after iteration (\d+) \(epoch '
                      r'1\); training stops here', out)
    assert saved, out[-3000:]
    path, done = saved[1], int(saved[2])
    assert path == osp.join(work, f'iter_{done}.pth')
    assert 3 <= done < 16  # mid-epoch: the resume must skip done batches
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read() == path
    ckpt = safe_load(path)
    assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (0, done)
    assert 'rng_state' in ckpt and 'optimizer' in ckpt
    assert not [f for f in os.listdir(work) if '.tmp' in f]

    out = finish(start_train(str(cfg), work, '--resume'))
    assert f'Resuming epoch 1 at batch {done + 1}' in out
    finish(uninterrupted)
    assert_same_weights(osp.join(full, 'epoch_2.pth'),
                        osp.join(work, 'epoch_2.pth'))

# Copyright (c) mmekd contributors. All rights reserved.
"""Two-process DDP (gloo, CPU) through tools/train.py --launcher pytorch."""
import glob
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from mmekd.utils import safe_load, setup_cpu_distributed

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# BatchNorm in training mode normalises with the statistics of each
# process's own half batch, so 2 x B and 1 x 2B would differ. With
# norm_eval=True every BN uses its (identical) running statistics and all
# losses are means over samples: the DDP-averaged gradient of two equal
# halves equals the gradient of the whole batch (up to summation order).
# No random augmentation and no shuffling: both runs see the same samples.
# private_norm/private_fc give each sub-net its own parameters, which must
# all be used in every step (DDP with find_unused_parameters=False fails at
# the 2nd iteration otherwise).
CONFIG = f"""
_base_ = {osp.join(REPO, 'configs', 'ddnn_demo_digits.py')!r}
model = dict(
    backbone=dict(depth=18, stem_channels=4, base_channels=4,
                  sub_depths=[[1, 1, 1, 1]], norm_eval=True,
                  private_norm=True),
    head=dict(in_channels=32, private_fc=True))
train_pipeline = [
    dict(type='Resize', scale=(16, 16), interpolation='bilinear'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=8,
    dataset=dict(pipeline=train_pipeline, indices=32),
    sampler=dict(shuffle=False))
train_cfg = dict(max_epochs=1)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _start(cmd):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    env.pop('CUDA_VISIBLE_DEVICES', None)
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def _finish(proc):
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the CPU path')
@pytest.mark.parametrize('mode', ['memory_efficient', 'simple'])
def test_ddp_two_processes_match_one_process(tmp_path, mode):
    """mmekd.DDNNDistributedDataParallel (the DDNN configs' wrapper): the
    memory-efficient step (per-net backwards, one gradient all-reduce) and
    MMEngine's simple step both equal one process on the whole batch."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(CONFIG + f'model.update(train_step_mode={mode!r})\n')
    train = osp.join(REPO, 'tools', 'train.py')
    ddp, single = str(tmp_path / 'ddp'), str(tmp_path / 'single')
    procs = [
        _start([
            sys.executable, '-m', 'torch.distributed.run',
            '--nproc_per_node=2', f'--master_port={_free_port()}', train,
            str(cfg), '--work-dir', ddp, '--no-validate', '--launcher',
            'pytorch'
        ]),
        _start([
            sys.executable, train, str(cfg), '--work-dir', single,
            '--no-validate', '--cfg-options', 'train_dataloader.batch_size=16'
        ]),
    ]
    _finish(procs[0]), _finish(procs[1])
    # The environment and config dumps are in rank 0's log file.
    with open(glob.glob(osp.join(ddp, '*', '*.log'))[0]) as f:
        log_ddp = f.read()
    assert 'Distributed training: True' in log_ddp
    assert "type='mmekd.DDNNDistributedDataParallel'" in log_ddp

    a = safe_load(osp.join(ddp, 'epoch_1.pth'))
    b = safe_load(osp.join(single, 'epoch_1.pth'))
    assert a['meta']['iter'] == b['meta']['iter'] == 2  # 2 x (2 x 8) / 16
    for key, value in b['state_dict'].items():
        torch.testing.assert_close(
            a['state_dict'][key], value, rtol=1e-5, atol=1e-6, msg=key)
    # The momentum buffers hold the (averaged) gradients: equal, and large
    # enough for the comparison above to mean something.
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys() and len(sb) > 0
    grads = torch.cat([sb[i]['momentum_buffer'].flatten() for i in sb])
    assert grads.norm() > 1e-2
    for i in sb:
        torch.testing.assert_close(sa[i]['momentum_buffer'],
                                   sb[i]['momentum_buffer'], rtol=1e-4,
                                   atol=1e-6)


def test_setup_cpu_distributed_config(monkeypatch):
    """What setup_cpu_distributed does to the config (no process group)."""
    cfg = Config(dict(launcher='none'))
    assert not setup_cpu_distributed(cfg)
    cfg = Config(dict(launcher='pytorch'))
    assert not setup_cpu_distributed(cfg, cuda_available=True)
    assert 'model_wrapper_cfg' not in cfg
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match='torchrun'):
        setup_cpu_distributed(cfg, cuda_available=False)

    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: True)
    for key, value in dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0',
                           MASTER_ADDR='127.0.0.1',
                           MASTER_PORT='1').items():
        monkeypatch.setenv(key, value)
    cfg = Config(dict(launcher='pytorch', find_unused_parameters=True,
                      model_wrapper_cfg=dict(broadcast_buffers=True)))
    assert setup_cpu_distributed(cfg, cuda_available=False)
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel', broadcast_buffers=True,
        find_unused_parameters=True, device_ids=None, output_device=None)

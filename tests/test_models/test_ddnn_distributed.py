# Copyright (c) mmekd contributors. All rights reserved.
"""mmekd.DDNNDistributedDataParallel in two gloo processes (CPU): a
non-finite loss on one process skips the step on both, without a hang.
(Equality with one process is tested through tools/train.py in
tests/test_tools/test_train_dist.py.)"""
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TINY = dict(
    type='mmekd.DDNNClassifier',
    backbone=dict(
        type='mmekd.DepthDynamicResNetCIFAR', depth=18, stem_channels=4,
        base_channels=4, sub_depths=[[1, 1, 1, 1]], out_indices=(0, 1, 2, 3)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='mmekd.MultiNetClsHead', num_classes=3, in_channels=32),
    data_preprocessor=dict(
        type='ClsDataPreprocessor', num_classes=3, mean=[0.] * 3,
        std=[1.] * 3))


def _worker(rank, port, out_dir, deferred=None):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    torch.set_num_threads(1)
    from mmpretrain.structures import DataSample

    import mmekd  # noqa: F401
    from mmekd.engine.optim import SafeOptimWrapper
    from mmekd.models import DDNNDistributedDataParallel
    from mmekd.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(dict(TINY, train_step_mode=deferred or
                              'memory_efficient'))
    ddp = DDNNDistributedDataParallel(
        module=model, device_ids=None, broadcast_buffers=False)
    if deferred:  # the check stays on the device (fused optimizer)
        wrapper = SafeOptimWrapper(
            torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                            fused=True), on_nonfinite='skip', check='device')
    else:
        wrapper = SafeOptimWrapper(
            torch.optim.SGD(model.parameters(), lr=0.1), on_nonfinite='skip')
    before = [p.detach().clone() for p in model.parameters()]
    inputs = torch.rand(4, 3, 16, 16)
    if rank == 0:
        inputs[0, 0, 0, 0] = float('nan')
    data = dict(inputs=inputs,
                data_samples=[DataSample().set_gt_label(i % 3)
                              for i in range(4)])
    log_vars = ddp.train_step(data, wrapper)
    unchanged = all(torch.equal(a, p) for a, p in zip(
        before, model.parameters()))
    pending = len(wrapper._pending)
    wrapper.report_nonfinite()  # deferred: counted here
    torch.save(dict(unchanged=unchanged, loss=float(log_vars['loss']),
                    skipped=wrapper.num_skipped, pending=pending),
               os.path.join(out_dir, f'rank{rank}.pth'))
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason='no torch.distributed')
@pytest.mark.parametrize('deferred', [None, 'memory_efficient', 'simple'])
def test_nonfinite_loss_on_one_process_skips_on_all(tmp_path, deferred):
    """Also with SafeOptimWrapper's deferred check (a fused optimizer; the
    flag all-reduced on the device, the step skipped there): in the
    memory-efficient step and in MMEngine's (where only rank 0's loss is
    NaN)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    ctx = mp.start_processes(_worker, args=(port, str(tmp_path), deferred),
                             nprocs=2, join=False, start_method='spawn')
    deadline = time.monotonic() + 60
    # join() returns False while some process still runs (and raises if
    # one failed).
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail('the processes did not finish: a hang in the '
                        'all-reduce')
    for rank in (0, 1):
        result = torch.load(tmp_path / f'rank{rank}.pth')
        if deferred != 'simple':
            # The averaged loss is NaN on both, so both skip the update.
            assert result['loss'] != result['loss'], rank
        assert result['unchanged'], rank
        assert result['skipped'] == 1, rank
        assert result['pending'] == (1 if deferred else 0), rank


@pytest.mark.parametrize('private_norm,copies', [('stats', 'sub_stats'),
                                                 (True, 'sub_norms')])
def test_sync_bn_conversion_of_private_norms_is_refused(private_norm, copies):
    from mmengine.model import convert_sync_batchnorm

    from mmekd.models import DDNNDistributedDataParallel
    from mmekd.models.wrappers.ddnn_distributed import \
        check_no_converted_private_norms
    from mmekd.registry import MODELS
    cfg = dict(TINY, backbone=dict(TINY['backbone'],
                                   private_norm=private_norm))
    model = MODELS.build(cfg)
    check_no_converted_private_norms(model)  # as built: fine
    converted = convert_sync_batchnorm(model)
    match = (r'backbone\.(layer\d\.0\.)?bn1 is a SyncBatchNorm holding '
             rf'per-net BatchNorm copies \({copies}\).*private_norm=False')
    # (Refused before DDP needs a process group.)
    with pytest.raises(ValueError, match=match):
        DDNNDistributedDataParallel(module=converted)
    # Shared BatchNorm converts fine.
    check_no_converted_private_norms(convert_sync_batchnorm(
        MODELS.build(dict(TINY, backbone=dict(TINY['backbone'],
                                              private_norm=False)))))

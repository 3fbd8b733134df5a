# Copyright (c) mmekd contributors. All rights reserved.
import os
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.fileio.backends import LocalBackend
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmekd.engine  # noqa: F401
from mmekd.utils import safe_load


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=self.fc(inputs).pow(2).mean())


class ToyDataset(Dataset):
    metainfo = dict(classes=('a', ))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i)))


def _runner(work_dir, hook_type, **hook_kwargs):
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=2,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=6),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=100),
            checkpoint=dict(
                type=hook_type, by_epoch=False, interval=2,
                max_keep_ckpts=1, **hook_kwargs)),
        default_scope='mmpretrain',
        experiment_name=f'{hook_type}_{osp.basename(work_dir)}')


class Crash(Exception):
    pass


@pytest.fixture
def crash_on_second_put(monkeypatch):
    """The 2nd checkpoint write dies half-way (as if the job was killed)."""
    put = LocalBackend.put
    calls = []

    def dying_put(self, obj, filepath):
        if str(filepath).endswith(('.pth', '.pth.tmp')):
            calls.append(filepath)
            if len(calls) == 2:
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                raise Crash
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', dying_put)


def _last(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def test_crash_during_save_keeps_last_checkpoint(tmp_path,
                                                 crash_on_second_put):
    runner = _runner(tmp_path, 'mmekd.AtomicCheckpointHook')
    with pytest.raises(Crash):
        runner.train()
    # iter_2 is complete, and still named by last_checkpoint; the half
    # written iter_4 never took a checkpoint's name.
    assert _last(tmp_path) == osp.join(str(tmp_path), 'iter_2.pth')
    assert safe_load(_last(tmp_path))['meta']['iter'] == 2
    assert not osp.exists(tmp_path / 'iter_4.pth')

    # Resuming from it finishes the run; only the newest file is kept and
    # no temp file is left behind.
    runner = _runner(tmp_path, 'mmekd.AtomicCheckpointHook')
    runner._resume, runner._load_from = True, None
    runner.train()
    assert runner.iter == 6
    files = sorted(f for f in os.listdir(tmp_path) if '.pth' in f)
    assert files == ['iter_6.pth'], files


def test_mmengine_hook_leaves_truncated_file(tmp_path, crash_on_second_put):
    """Why the hook exists: MMEngine's hook, same crash."""
    runner = _runner(tmp_path, 'CheckpointHook')
    with pytest.raises(Crash):
        runner.train()
    # iter_2 was deleted before iter_4 was (half) written.
    assert not osp.exists(_last(tmp_path))
    with pytest.raises(RuntimeError, match='truncated'):
        safe_load(str(tmp_path / 'iter_4.pth'))


def test_best_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    """``save_best`` files go through the temp file too."""
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(
        os, 'replace',
        lambda src, dst: (renamed.append((src, dst)), real_replace(src,
                                                                   dst)))
    runner = _runner(tmp_path, 'mmekd.AtomicCheckpointHook',
                     save_best='loss', rule='less')
    runner.train_loop  # build the loop, then fake an evaluation
    runner.call_hook('before_train')
    hook = next(h for h in runner.hooks
                if type(h).__name__ == 'AtomicCheckpointHook')
    hook.after_val_epoch(runner, dict(loss=1.0))
    names = [osp.basename(dst) for _, dst in renamed]
    assert 'best_loss_iter_0.pth' in names
    assert all(src.endswith('.tmp') or 'last_checkpoint' in dst
               for src, dst in renamed)


def _best_hook(runner):
    runner.train_loop  # build the loop, then fake evaluations
    runner.call_hook('before_train')
    return next(h for h in runner.hooks
                if type(h).__name__ == 'AtomicCheckpointHook')


def test_kill_during_best_save_keeps_previous_best(tmp_path, monkeypatch):
    """MMEngine removes the previous best checkpoint before writing the
    new one: a kill in between lost the best model. Now the old one goes
    only after the new one is complete, and the interrupted save's temp
    file is removed when training restarts."""
    runner = _runner(tmp_path, 'mmekd.AtomicCheckpointHook',
                     save_best='loss', rule='less')
    hook = _best_hook(runner)
    hook.after_val_epoch(runner, dict(loss=1.0))
    first = osp.join(str(tmp_path), 'best_loss_iter_0.pth')
    assert osp.isfile(first)

    put = LocalBackend.put

    def dying_put(self, obj, filepath):  # killed half-way through the write
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
        raise Crash

    monkeypatch.setattr(LocalBackend, 'put', dying_put)
    runner.train_loop._iter = 2
    with pytest.raises(Crash):
        hook.after_val_epoch(runner, dict(loss=0.5))
    monkeypatch.setattr(LocalBackend, 'put', put)
    assert osp.isfile(first), 'the previous best checkpoint was deleted'
    assert safe_load(first)['meta']['iter'] == 0
    assert osp.exists(str(tmp_path / 'best_loss_iter_2.pth.tmp'))

    restarted = _runner(tmp_path, 'mmekd.AtomicCheckpointHook',
                        save_best='loss', rule='less')
    _best_hook(restarted)
    assert not [f for f in os.listdir(tmp_path) if '.tmp' in f]
    assert osp.isfile(first)


def test_new_best_replaces_previous_best(tmp_path):
    runner = _runner(tmp_path, 'mmekd.AtomicCheckpointHook',
                     save_best='loss', rule='less')
    hook = _best_hook(runner)
    hook.after_val_epoch(runner, dict(loss=1.0))
    runner.train_loop._iter = 2
    hook.after_val_epoch(runner, dict(loss=0.5))
    best = sorted(f for f in os.listdir(tmp_path) if f.startswith('best'))
    assert best == ['best_loss_iter_2.pth'], best


def test_nonfinite_model_is_never_saved(tmp_path):
    from mmekd.utils.finite import NonFiniteStateError
    runner = _runner(tmp_path, 'mmekd.AtomicCheckpointHook',
                     save_best='loss', rule='less')
    hook = _best_hook(runner)
    with torch.no_grad():
        runner.model.fc.bias.fill_(float('nan'))
    with pytest.raises(NonFiniteStateError,
                       match=r'NaN or infinite values in 1 of 2 tensors: '
                       r'fc\.bias\. Not saving best_loss_iter_0\.pth'):
        hook.after_val_epoch(runner, dict(loss=0.0))
    assert not [f for f in os.listdir(tmp_path) if '.pth' in f]

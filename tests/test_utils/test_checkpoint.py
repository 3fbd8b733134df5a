# Copyright (c) mmekd contributors. All rights reserved.
import io
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint

import mmekd  # noqa: F401  (registers the safe loader)
from mmekd.utils import UnsafeCheckpointError, safe_load


class _RunsShell:
    """Unpickling this runs a shell command (what a malicious checkpoint
    does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'echo pwned > {self.marker}', ))


class _CallsGetattr:
    """Unpickling this calls ``getattr(HistoryBuffer, '__init__')``: the
    allow-listed ``getattr`` must refuse anything but the statistics."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


def _mmengine_style_checkpoint():
    buffer = HistoryBuffer()
    buffer.update(1.5)
    buffer.update(2.5, count=2)
    hub = MessageHub('test_checkpoint_hub')
    hub.update_scalar('train/loss', 0.25)
    hub.update_info('iter', 7)
    return dict(
        meta=dict(epoch=3, seed=np.int64(42), lr=np.float64(0.1)),
        state_dict={'backbone.conv1.weight': torch.randn(2, 3)},
        message_hub=hub.state_dict(),
        extra=dict(
            buffer=buffer,
            empty_buffer=HistoryBuffer(),
            array=np.arange(6, dtype=np.float32).reshape(2, 3),
            empty_array=np.zeros((0, 2)),
            flags=np.array([True, False]),
            names=np.array(['a', 'bc']),
            half=np.float16(0.5),
            flag=np.bool_(True)))


def test_mmengine_objects_round_trip(tmp_path):
    ckpt = _mmengine_style_checkpoint()
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    for loaded in (safe_load(str(path)), safe_load(io.BytesIO(
            path.read_bytes()))):
        assert torch.equal(loaded['state_dict']['backbone.conv1.weight'],
                           ckpt['state_dict']['backbone.conv1.weight'])
        assert loaded['meta'] == ckpt['meta']
        assert type(loaded['meta']['seed']) is np.int64
        extra = loaded['extra']
        assert isinstance(extra['buffer'], HistoryBuffer)
        np.testing.assert_array_equal(extra['buffer'].data[0], [1.5, 2.5])
        np.testing.assert_array_equal(extra['buffer'].data[1], [1, 2])
        assert extra['buffer'].mean() == pytest.approx(4 / 3)
        assert extra['buffer'].statistics('current') == 2.5
        assert len(extra['empty_buffer'].data[0]) == 0
        for key in ('array', 'empty_array', 'flags', 'names'):
            np.testing.assert_array_equal(extra[key], ckpt['extra'][key])
            assert extra[key].dtype == ckpt['extra'][key].dtype
        assert extra['half'] == np.float16(0.5) and extra['flag']
        hub = loaded['message_hub']
        assert hub['log_scalars']['train/loss'].current() == 0.25
        assert hub['runtime_info']['iter'] == 7


def test_pickled_shell_command_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _RunsShell(marker)}, path)

    with pytest.raises(UnsafeCheckpointError,
                       match=r'Refusing to load checkpoint .*evil\.pth.*'
                       r'GLOBAL posix\.system'):
        safe_load(str(path))
    with pytest.raises(UnsafeCheckpointError, match='Refusing'):
        CheckpointLoader.load_checkpoint(str(path))
    assert not marker.exists()
    assert issubclass(UnsafeCheckpointError, pickle.UnpicklingError)

    # The payload is live: unrestricted unpickling does run it.
    torch.load(path, weights_only=False)
    assert marker.read_text().strip() == 'pwned'


def test_pickled_callables_are_refused(tmp_path):
    path = tmp_path / 'callable.pth'
    torch.save({'fn': os.getcwd}, path)
    with pytest.raises(UnsafeCheckpointError, match='getcwd'):
        safe_load(str(path))
    torch.save({'x': _CallsGetattr()}, path)
    with pytest.raises(UnsafeCheckpointError,
                       match=r"getattr\(.*HistoryBuffer.*'__init__'\) is not "
                       'allowed'):
        safe_load(str(path))


def test_truncated_or_garbage_file(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.randn(100)}, good)
    data = good.read_bytes()
    cases = {
        'truncated.pth': data[:len(data) // 2],
        'empty.pth': b'',
        'garbage.pth': b'hello world, not a checkpoint',
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(
                RuntimeError,
                match=f'Cannot read checkpoint .*{name}: the file is '
                'truncated or not a PyTorch checkpoint'):
            safe_load(str(path))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'missing.pth'))


def test_mmengine_loader_goes_through_safe_load(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    torch.save(_mmengine_style_checkpoint(), path)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get('weights_only'))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert calls == [True]
    assert isinstance(loaded['extra']['buffer'], HistoryBuffer)

    # load_checkpoint (load_from, init_cfg Pretrained) too.
    model = torch.nn.Linear(3, 2, bias=False)
    torch.save({'state_dict': {'weight': torch.ones(2, 3)},
                'message_hub': _mmengine_style_checkpoint()['message_hub']},
               path)
    load_checkpoint(model, str(path))
    assert torch.equal(model.weight, torch.ones(2, 3))
    assert calls == [True, True]

# Copyright (c) mmekd contributors. All rights reserved.
import io
import os
import os.path as osp
import pickle
import signal
import struct
import sys
import zipfile

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint

import mmekd  # noqa: F401  (registers the safe loader)
from mmekd.utils import UnsafeCheckpointError, safe_load

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', 'test_security'))
from payloads import aliased_records  # noqa: E402


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
        'truncated.pth': ('truncated or not a PyTorch checkpoint '
                          r'\(BadZipFile'),
        'empty.pth': r'not a PyTorch checkpoint \(it is empty\)',
        'garbage.pth': r'not a PyTorch checkpoint \(it starts with neither',
    }
    contents = [data[:len(data) // 2], b'', b'hello world, not a checkpoint']
    for (name, reason), content in zip(cases.items(), contents):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(
                RuntimeError,
                match=f'Cannot read checkpoint .*{name}: the file is '
                f'{reason}'):
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


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    """Not refused as code that could run: named as not a checkpoint."""
    noise = tmp_path / 'noise.pth'
    noise.write_bytes(bytes(range(256)) * 16)
    urandom = tmp_path / 'urandom.pth'
    urandom.symlink_to('/dev/urandom')
    for path, reason in ((noise, 'it starts with neither a zip header nor '
                          "the magic number of torch's legacy format"),
                         (urandom, 'but a character device (/dev/urandom)')):
        with pytest.raises(RuntimeError) as e:
            safe_load(str(path))
        assert type(e.value) is RuntimeError
        assert str(e.value).startswith(
            f'Cannot read checkpoint {path}: the file is not a PyTorch '
            f'checkpoint {"(" if path == noise else ""}{reason}')


def test_fifo_is_refused_without_blocking(tmp_path):
    """Before, opening it blocked for ever (a test that regresses is
    stopped by an alarm; test_load_matrix runs every load path in a
    child)."""
    fifo = tmp_path / 'ckpt.pth'
    os.mkfifo(fifo)

    def blocked(signum, frame):
        raise TimeoutError('safe_load blocked on a FIFO')

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)
    try:
        with pytest.raises(RuntimeError) as e:
            CheckpointLoader.load_checkpoint(str(fifo))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert str(e.value) == (
        f'Cannot read checkpoint {fifo}: the file is not a PyTorch '
        'checkpoint but a FIFO (named pipe)')


def test_compressed_record_is_refused_without_inflating(tmp_path):
    """torch.save stores records; a deflated 64 MiB record of zeros (64 KiB
    in the file) was inflated on every load."""
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {'w': torch.zeros(2**24)}}, path)
    deflated = tmp_path / 'deflated.pth'
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(deflated, 'w') as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=(
                zipfile.ZIP_DEFLATED if info.filename.endswith('/data/0')
                else zipfile.ZIP_STORED))
    assert deflated.stat().st_size < 2**20
    with pytest.raises(UnsafeCheckpointError) as e:
        safe_load(str(deflated))
    assert str(e.value) == (
        f"Refusing to load checkpoint {deflated}: its record 'ckpt/data/0' "
        'is compressed (deflate), but torch.save stores every record '
        'uncompressed; it is not inflated (it declares 67108864 bytes)')


def test_records_sharing_bytes_are_refused(tmp_path):
    """64 records declared over the bytes of one (1 MiB): loading them
    allocated 64 MiB."""
    buf = io.BytesIO()
    torch.save({f't{i}': torch.zeros(2**18) for i in range(64)}, buf)
    path = tmp_path / 'aliased.pth'
    path.write_bytes(aliased_records(buf.getvalue(), 'archive/data/'))
    size = path.stat().st_size
    with pytest.raises(UnsafeCheckpointError,
                       match=f'aliased.pth: its records declare 671[0-9]{{5}} '
                       f'bytes in all, more than the {size} bytes of the '
                       r'file \(they overlap\)'):
        safe_load(str(path))


def test_record_declaring_bytes_beyond_the_file_is_refused(tmp_path):
    path = tmp_path / 'forged.pth'
    torch.save({'w': torch.zeros(4)}, path)
    data = bytearray(path.read_bytes())
    # The central directory entry of the storage: its sizes, 1 GiB.
    entry = data.rindex(b'PK\x01\x02', 0, data.rindex(b'forged/data/0'))
    data[entry + 20:entry + 28] = struct.pack('<II', 2**30, 2**30)
    path.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError,
                       match="its record 'forged/data/0' declares 1073741824 "
                       f'bytes that the {len(data)}-byte file does not hold'):
        safe_load(str(path))


def test_tensors_must_cover_their_elements_without_overlap(tmp_path):
    path = tmp_path / 'zero_stride.pth'
    base = torch.arange(12.)
    torch.save({'state_dict': {'w': torch.zeros(4).as_strided(
        (2**20, 2**20), (0, 0))}}, path)
    with pytest.raises(UnsafeCheckpointError) as e:
        safe_load(str(path))
    assert str(e.value) == (
        f"Refusing to load checkpoint {path}: the tensor ['state_dict']['w'] "
        'of shape (1048576, 1048576) has strides (0, 0) under which its '
        '1099511627776 elements overlap (a stride of 0, or one a smaller '
        'dimension already reaches); its storage holds 16 bytes')
    # A dimension reaching into the next one overlaps as well.
    torch.save({'w': base.as_strided((3, 4), (2, 1))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"tensor \['w'\] of "
                       r'shape \(3, 4\) has strides \(2, 1\)'):
        safe_load(str(path))
    # Views that skip or reorder elements are fine.
    views = {'every_other': base[::2], 'transposed': base.view(3, 4).t(),
             'tail': base[5:], 'scalar': base[3], 'empty': base[:0],
             'size_one': base.as_strided((1, 3), (0, 1))}
    torch.save(views, path)
    loaded = safe_load(str(path))
    for key, view in views.items():
        assert torch.equal(loaded[key], view), key
        assert loaded[key].stride() == view.stride(), key


def test_tensor_layout_against_storage_bytes():
    """The bounds torch's own set_() enforces today, checked from the
    numbers alone."""
    from mmekd.utils.safe_objects import _tensor_layout_problem
    assert _tensor_layout_problem((3, 4), (4, 1), 0, 4, 48) is None
    assert _tensor_layout_problem((3, 4), (4, 1), 1, 4, 48) == (
        '(strides (4, 1), offset 1) reaches byte 52 of a storage of 48 '
        'bytes')
    assert _tensor_layout_problem((2, ), (1, ), -1, 4, 48) is not None
    assert _tensor_layout_problem((0, 5), (0, 0), 0, 4, 0) is None

# Copyright (c) mmekd contributors. All rights reserved.
"""Every load path x every hostile file, in subprocesses.

Checkpoints: the 14 ways a user loads one (tools, ``--resume``,
``load_from``, ``init_cfg``, MMPretrain/MMEngine APIs, a Knowledge Evolution
generation checkpoint) are each given: a pickled shell command as a plain
pickle, a torch zip file and a legacy torch file; a real checkpoint with
code in its stored config (``meta['cfg']``); one with the numpy payload that
made the old allow-list dereference attacker bytes (SIGSEGV); one with a
``HistoryBuffer`` whose state replaces ``mean``; one with its zip records
deflated; one with a tensor of 2**40 elements over 16 bytes (zero strides);
a FIFO, a symlink to ``/dev/urandom`` and random bytes.

Datasets: the CIFAR-10/100 datasets (train and test files),
``load_cifar_batch`` on the meta files and ``tools/train.py
configs/ddnn_r34_cifar100.py`` are each given a CIFAR file that pickles a
shell command, an object array with cleared flags (SIGSEGV), an array numpy
would allocate 256 GiB for, absurd or short rows, numpy scalars, a call of
``_codecs.encode`` other than protocol 2's, a list, a truncated pickle, a
FIFO, a symlink to ``/dev/urandom`` and random bytes; and two re-packed
copies that must load (Python 3 protocol 2, Python 2's layout).

``load_matrix.py`` runs a part in a subprocess. If it dies or blocks, the
attempt under way is recorded (``crashed`` or ``hung``) and the rest run in
a new subprocess: a crash fails the test of that one load path.
"""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest

from load_matrix import ATTEMPT_SECONDS, CIFAR_PAYLOADS, GOOD_CIFAR
from payloads import CONTAINER_PAYLOADS

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
PICKLE_LEVEL = ('shell_zip', 'shell_legacy', 'numpy_crash',
                'history_buffer_override')
NOT_A_CHECKPOINT = ('shell_pickle', 'random_bytes')
NON_REGULAR = ('fifo', 'urandom_symlink')
CHECKPOINT_PAYLOADS = 6 + len(CONTAINER_PAYLOADS)
# Paths that read the stored config (to check which nets were trained).
READ_META_CFG = ('export_subnet', 'export_onnx', 'mmekd.apis.load_ddnn_model')
CHECKPOINT_PATHS = [
    'tools/test.py', 'train --resume PATH', 'train --resume (last_checkpoint)',
    'load_from', 'init_cfg=Pretrained', 'export_subnet', 'export_onnx',
    'extract_slim', 'subnet_costs', 'eval_recalibrated',
    'mmpretrain.get_model(pretrained=PATH)', 'mmengine load_checkpoint',
    'mmekd.apis.load_ddnn_model', 'KE generation checkpoint (--resume)'
]
DATASET_PATHS = [
    'CIFAR100 train', 'CIFAR100 test', 'CIFAR10 train', 'CIFAR10 test',
    'load_cifar_batch(meta)', 'load_cifar_batch(batches.meta)',
    'tools/train.py ddnn_r34_cifar100'
]
# What each refusal of a CIFAR file says, beyond the file's name.
CIFAR_REASONS = {
    'shell': 'refusing to unpickle posix.system',
    'object_array_cleared_flags': "numpy dtype 'O8' is not allowed",
    'absurd_start_shape': 'not with shape (274877906944,)',
    'absurd_shape': 'found an array of shape (524288, 524288)',
    'short_rows': 'found an array of shape (40, 3000)',
    'numpy_scalar_labels': 'refusing to unpickle numpy._core.multiarray.'
    'scalar',
    'codecs_call': "_codecs.encode('a batch', 'rot13') is not allowed",
    'not_a_dict': 'it holds a list, not a dict',
    'truncated': 'pickle data was truncated',
    'fifo': 'is a FIFO (named pipe), not a regular file',
    'urandom_symlink': 'is a character device (/dev/urandom), not a regular '
    'file',
    'random_bytes': 'is not a valid CIFAR pickle batch: invalid load key',
}
ROWS = ('object_array_cleared_flags', 'absurd_start_shape', 'absurd_shape',
        'short_rows')


def run_matrix(part: str, work: str) -> dict:
    """Run ``load_matrix.py`` until every attempt of ``part`` has a record:
    an attempt that kills the driver or stops answering is recorded as
    ``crashed`` / ``hung`` and the driver runs again after it."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    results, running = osp.join(work, 'results.json'), osp.join(
        work, 'running.json')
    deadline = time.time() + 1800
    with open(osp.join(work, 'driver.log'), 'ab') as log:
        while True:
            proc = subprocess.Popen(
                [sys.executable, osp.join(HERE, 'load_matrix.py'), work, part],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            while proc.poll() is None and time.time() < deadline and not (
                    osp.exists(running) and time.time() - osp.getmtime(
                        running) > ATTEMPT_SECONDS + 60):
                time.sleep(0.5)
            stopped = proc.poll() is None  # blocked: no answer in time
            if stopped:
                proc.kill()
            rc = proc.wait()
            if rc == 0 or not osp.exists(running) or time.time() > deadline:
                break
            with open(running) as f:
                attempt = json.load(f)
            os.remove(running)
            how = (f'killed by {signal.Signals(-rc).name}' if rc < 0 else
                   f'exited with status {rc}')
            records = json.load(open(results)) if osp.exists(results) else []
            records.append(dict(
                attempt, outcome='hung' if stopped else 'crashed',
                error=f'the loader {how}', message=f'the loader {how}',
                code_ran=False, seconds=None))
            with open(results, 'w') as f:
                json.dump(records, f, indent=1)
    with open(osp.join(work, 'driver.log'), 'rb') as f:
        tail = f.read()[-3000:].decode(errors='replace')
    return dict(returncode=rc,
                records=json.load(open(results)) if osp.exists(results) else
                [], tail=tail)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    return run_matrix('checkpoints',
                      str(tmp_path_factory.mktemp('load_matrix')))


@pytest.fixture(scope='module')
def datasets(tmp_path_factory):
    return run_matrix('datasets', str(tmp_path_factory.mktemp('data_matrix')))


def _died(matrix):
    return [(r['path'], r['payload'], r['outcome'])
            for r in matrix['records'] if r['outcome'] in ('crashed', 'hung')]


@pytest.mark.slow
def test_no_process_dies(checkpoints):
    assert not _died(checkpoints), (_died(checkpoints), checkpoints['tail'])
    assert checkpoints['returncode'] == 0, checkpoints['tail']
    assert len(checkpoints['records']) == 14 * CHECKPOINT_PAYLOADS


def _records(matrix, path, count):
    rows = [r for r in matrix['records'] if r['path'] == path]
    assert len(rows) == count, (path, matrix['tail'])
    return {r['payload']: r for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize('path', CHECKPOINT_PATHS)
def test_load_path_refuses_hostile_files(checkpoints, path):
    rows = _records(checkpoints, path, CHECKPOINT_PAYLOADS)
    for payload, r in rows.items():
        assert not r['code_ran'], f'{path} ran the code in {payload}'
        assert r['outcome'] in ('refused', 'loaded'), (payload, r['message'])
    for payload in PICKLE_LEVEL + ('compressed_record', 'zero_stride'):
        r = rows[payload]
        assert r['outcome'] == 'refused', (path, payload)
        assert f"Refusing to load checkpoint {r['file']}" in r['message'], (
            path, payload, r['message'])
    assert "is compressed (deflate), but torch.save stores every record " \
        'uncompressed' in rows['compressed_record']['message']
    assert 'of shape (1048576, 1048576) has strides (0, 0)' in rows[
        'zero_stride']['message']
    for payload in NOT_A_CHECKPOINT:
        r = rows[payload]
        assert r['outcome'] == 'refused', (path, payload)
        assert (f"Cannot read checkpoint {r['file']}: the file is not a "
                'PyTorch checkpoint') in r['message'], (path, r['message'])
    meta = rows['code_in_meta_cfg']
    if path in READ_META_CFG:
        assert meta['outcome'] == 'refused'
        assert (f"the config stored in checkpoint {meta['file']} "
                "(meta['cfg']) is not plain data") in meta['message']
        assert 'it was not executed' in meta['message']
    else:  # the weights are fine: the path loads them, runs nothing
        assert meta['outcome'] == 'loaded', meta['message']


@pytest.mark.slow
@pytest.mark.parametrize('path', [
    p for p in CHECKPOINT_PATHS
])
def test_non_regular_file_is_named_so(checkpoints, path):
    """A FIFO or a symlink to a device is refused at once (never opened for
    reading, so nothing blocks), as what it is."""
    rows = _records(checkpoints, path, CHECKPOINT_PAYLOADS)
    for payload, kind in zip(NON_REGULAR, ('a FIFO (named pipe)',
                                           'a character device '
                                           '(/dev/urandom)')):
        r = rows[payload]
        assert r['outcome'] == 'refused' and r['seconds'] < 60, r
        assert (f"Cannot read checkpoint {r['file']}: the file is not a "
                f'PyTorch checkpoint but {kind}') in r['message'], r['message']


@pytest.mark.slow
def test_no_dataset_loader_dies(datasets):
    assert not _died(datasets), (_died(datasets), datasets['tail'])
    assert datasets['returncode'] == 0, datasets['tail']
    assert len(datasets['records']) == len(DATASET_PATHS) * len(
        CIFAR_PAYLOADS + GOOD_CIFAR) - len(GOOD_CIFAR)


@pytest.mark.slow
@pytest.mark.parametrize('path', DATASET_PATHS)
def test_dataset_path_refuses_hostile_files(datasets, path):
    good = () if path.startswith('tools/') else GOOD_CIFAR
    rows = _records(datasets, path, len(CIFAR_PAYLOADS + good))
    for payload in CIFAR_PAYLOADS:
        r = rows[payload]
        assert r['outcome'] == 'refused' and not r['code_ran'], r
        # One line that names the file and the reason.
        assert '\n' not in r['error'] and r['file'] in r['error'], r['error']
        assert CIFAR_REASONS[payload] in r['error'], (payload, r['error'])
        if payload in ROWS:
            assert "'data' must hold uint8 rows of 3072 bytes" in r['error']
    for payload in good:
        assert rows[payload]['outcome'] == 'loaded', rows[payload]['message']

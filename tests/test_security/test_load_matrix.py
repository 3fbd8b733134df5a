# Copyright (c) mmekd contributors. All rights reserved.
"""Every load path x every hostile checkpoint, in one subprocess.

The 14 ways a user loads a checkpoint (tools, ``--resume``, ``load_from``,
``init_cfg``, MMPretrain/MMEngine APIs, a Knowledge Evolution generation
checkpoint) are each given: a pickled shell command as a plain pickle, a
torch zip file and a legacy torch file (the plain pickle is refused as
not a checkpoint, before it is read); a real checkpoint with code in its
stored config (``meta['cfg']``); one with the numpy payload that made the
old allow-list dereference attacker bytes (SIGSEGV); one with a
``HistoryBuffer`` whose state replaces ``mean``. ``load_matrix.py`` runs
them all; a crash fails every test below instead of the test run.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
PICKLE_LEVEL = ('shell_zip', 'shell_legacy', 'numpy_crash',
                'history_buffer_override')
# Paths that read the stored config (to check which nets were trained).
READ_META_CFG = ('export_subnet', 'export_onnx', 'mmekd.apis.load_ddnn_model')


@pytest.fixture(scope='module')
def matrix(tmp_path_factory):
    work = tmp_path_factory.mktemp('load_matrix')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, osp.join(HERE, 'load_matrix.py'), str(work)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    results = osp.join(work, 'results.json')
    records = json.load(open(results)) if osp.exists(results) else []
    running = osp.join(work, 'running.json')
    crashed = json.load(open(running)) if osp.exists(running) else None
    return dict(returncode=proc.returncode, records=records,
                crashed=crashed, tail=(proc.stdout + proc.stderr)[-3000:])


def test_no_process_dies(matrix):
    assert matrix['returncode'] == 0, (
        f"the loader died (exit {matrix['returncode']}) at "
        f"{matrix['crashed']}:\n{matrix['tail']}")
    assert len(matrix['records']) == 14 * 6


def _records(matrix, path):
    rows = [r for r in matrix['records'] if r['path'] == path]
    assert len(rows) == 6, (path, matrix['crashed'], matrix['tail'])
    return {r['payload']: r for r in rows}


@pytest.mark.parametrize('path', [
    'tools/test.py', 'train --resume PATH', 'train --resume (last_checkpoint)',
    'load_from', 'init_cfg=Pretrained', 'export_subnet', 'export_onnx',
    'extract_slim', 'subnet_costs', 'eval_recalibrated',
    'mmpretrain.get_model(pretrained=PATH)', 'mmengine load_checkpoint',
    'mmekd.apis.load_ddnn_model', 'KE generation checkpoint (--resume)'])
def test_load_path_refuses_hostile_files(matrix, path):
    rows = _records(matrix, path)
    for payload, r in rows.items():
        assert not r['code_ran'], f'{path} ran the code in {payload}'
    for payload in PICKLE_LEVEL:
        r = rows[payload]
        assert r['outcome'] == 'refused', (path, payload)
        assert f"Refusing to load checkpoint {r['file']}" in r['message'], (
            path, payload, r['message'])
    # A plain pickle is not a checkpoint: refused before anything is read.
    r = rows['shell_pickle']
    assert r['outcome'] == 'refused', path
    assert (f"Cannot read checkpoint {r['file']}: the file is not a PyTorch "
            'checkpoint') in r['message'], (path, r['message'])
    meta = rows['code_in_meta_cfg']
    if path in READ_META_CFG:
        assert meta['outcome'] == 'refused'
        assert (f"the config stored in checkpoint {meta['file']} "
                "(meta['cfg']) is not plain data") in meta['message']
        assert 'it was not executed' in meta['message']
    else:  # the weights are fine: the path loads them, runs nothing
        assert meta['outcome'] == 'loaded', meta['message']

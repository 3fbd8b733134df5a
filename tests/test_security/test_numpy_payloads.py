# Copyright (c) mmekd contributors. All rights reserved.
"""Crafted numpy / HistoryBuffer payloads against :func:`safe_load`.

Each payload is loaded in a subprocess (all in one), so a crash of the
interpreter is a test failure. The last test shows that the probe's payload
is live: with numpy's own rebuild functions allow-listed (what the loader
did before), the process dies by SIGSEGV.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from payloads import history_buffer_payloads, numpy_payloads

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
NAMES = sorted({**numpy_payloads(), **history_buffer_payloads()})

DRIVER = r'''
import io, json, sys
sys.path.insert(0, {here!r})
from payloads import dumps, history_buffer_payloads, numpy_payloads
from mmekd.utils import safe_load
out = {{}}
for name, p in sorted({{**numpy_payloads(),
                        **history_buffer_payloads()}}.items()):
    buf = io.BytesIO(dumps(p))
    buf.name = name + '.pth'
    try:
        safe_load(buf)
        out[name] = 'loaded'
    except Exception as e:
        out[name] = type(e).__name__ + ': ' + str(e)
    print(json.dumps({{name: out[name]}}), flush=True)
'''


@pytest.fixture(scope='module')
def outcomes():
    proc = subprocess.run(
        [sys.executable, '-c', DRIVER.format(here=HERE)], cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
        text=True, timeout=300)
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith('{'):
            found.update(json.loads(line))
    return proc.returncode, found, proc.stderr[-2000:]


@pytest.mark.parametrize('name', NAMES)
def test_payload_is_refused_without_crash(outcomes, name):
    returncode, found, err = outcomes
    assert returncode == 0, f'the loader died (exit {returncode}) after ' \
        f'{sorted(found)}: {err}'
    assert found[name].startswith('UnsafeCheckpointError: Refusing to load '
                                  f'checkpoint {name}.pth'), found[name]


def test_refusals_give_the_reason(outcomes):
    found = outcomes[1]
    assert "numpy dtype 'O8' is not allowed" in found[
        'object_scalar_cleared_flags']
    assert 'has an altered state' in found['float_dtype_with_object_flags']
    assert 'of shape (1099511627776, 1099511627776) needs' in found[
        'absurd_shape']
    assert 'invalid shape (-1,)' in found['negative_shape']
    assert 'must be stored as 8 bytes' in found['scalar_data_too_short']
    assert "'mean'" in found['buffer_method_override']


def test_the_crash_payload_is_live():
    """With numpy's rebuild functions allow-listed, as before, the probe's
    payload kills the interpreter."""
    code = r'''
import io, sys, numpy as np, torch
sys.path.insert(0, {here!r})
from payloads import dumps, numpy_payloads
try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:
    from numpy.core.multiarray import _reconstruct, scalar
allowed = [scalar, np.dtype, type(np.dtype(object))]
buf = io.BytesIO(dumps(numpy_payloads()['object_scalar_cleared_flags']))
with torch.serialization.safe_globals(allowed):
    print(repr(torch.load(buf, weights_only=True)['payload']))
'''.format(here=HERE)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          timeout=120)
    assert proc.returncode < 0, (proc.returncode, proc.stderr[-500:])

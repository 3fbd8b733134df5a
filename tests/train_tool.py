# Copyright (c) mmekd contributors. All rights reserved.
"""Run ``tools/train.py`` in a child process, as a user does (the tests that
kill, signal or resume a real training run). ``tests/`` is on ``sys.path``
through its ``conftest.py``."""
import os
import subprocess
import sys

import torch
from tool_loader import REPO, tool_path

from mmekd.utils import safe_load


def start_train(cfg: str, work_dir: str, *extra: str,
                python_path: str = '') -> subprocess.Popen:
    """``tools/train.py CFG --work-dir WORK_DIR --no-validate EXTRA...``
    with this checkout's mmekd (and ``python_path``, a folder of the
    config's own modules), stdout and stderr in ``proc.stdout``."""
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(p for p in (REPO, python_path)
                                          if p))
    return subprocess.Popen(
        [sys.executable, tool_path('train'), cfg, '--work-dir', work_dir,
         '--no-validate', *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def finish(proc: subprocess.Popen, returncode: int = 0) -> str:
    """Wait for ``proc``; check its exit status; return its output."""
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == returncode, out[-3000:]
    return out


def assert_same_weights(expected_ckpt: str, got_ckpt: str) -> None:
    """The two checkpoints hold bit-identical weights."""
    expected = safe_load(expected_ckpt)['state_dict']
    got = safe_load(got_ckpt)['state_dict']
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0,
                                   msg=key)

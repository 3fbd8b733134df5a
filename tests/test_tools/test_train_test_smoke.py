# Copyright (c) mmekd contributors. All rights reserved.
"""One epoch of the demo through tools/train.py, then tools/test.py on the
checkpoint it wrote: the entry points users type, end to end."""
import os.path as osp
import re
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'ddnn_demo_digits.py')


def run(*args):
    proc = subprocess.run([sys.executable, *args],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def table_rows(text):
    """{net: top-1} from a printed per-net table."""
    return {
        m[1]: float(m[2])
        for m in re.finditer(r'^\| (full|sub\d+) \| \[[\d, ]+\] \| ([\d.]+)',
                             text, re.M)
    }


def test_demo_one_epoch_then_test(tmp_path):
    work_dir = str(tmp_path / 'work')
    out = run(
        osp.join(ROOT, 'tools', 'train.py'), CONFIG, '--work-dir', work_dir,
        '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        'default_hooks.checkpoint.interval=1')
    trained = table_rows(out)
    assert set(trained) == {'full', 'sub0', 'sub1'}, out[-2000:]
    assert all(0 <= v <= 100 for v in trained.values())
    ckpt = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(ckpt)

    # tools/test.py loads the mmengine checkpoint with weights_only=True
    # (mmekd's allow-list) and reproduces the validation numbers.
    out = run(
        osp.join(ROOT, 'tools', 'test.py'), CONFIG, ckpt, '--work-dir',
        str(tmp_path / 'test'))
    tested = table_rows(out)
    assert tested == trained, (trained, tested)

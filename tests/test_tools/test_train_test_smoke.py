# Copyright (c) mmekd contributors. All rights reserved.
"""One epoch of the demo through tools/train.py, then tools/test.py on the
checkpoint it wrote: the entry points users type, end to end."""
import ast
import glob
import os.path as osp
import re
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'ddnn_demo_digits.py')


def run(*args, console=False):
    """stdout of ``python *args`` (with ``console``: stdout and stderr
    interleaved, as a terminal shows them)."""
    proc = subprocess.run([sys.executable, *args],
                          cwd=ROOT,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if console else
                          subprocess.PIPE,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + (proc.stderr or '')
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
        'default_hooks.checkpoint.interval=1', console=True)
    check_console(out, work_dir)
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


def check_console(out, work_dir):
    """Signal before noise: a few lines before the first iteration, progress
    four times in the 23-iteration epoch, no warnings; the environment and
    config dumps are in the log file."""
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if 'Epoch(train)' in line)
    assert first <= 6, '\n'.join(lines[:first])
    train = [line for line in lines if 'Epoch(train)' in line]
    assert len(train) == 4 and all('eta: ' in t and 'loss_kl_sub1: ' in t
                                   for t in train), train
    assert 'Warning' not in out and '-0.0000' not in out, out[:3000]
    log = glob.glob(osp.join(work_dir, '*', '*.log'))[0]
    # Where the dumps went, and the optimizer implementation chosen (once).
    assert any(line.endswith(log) for line in lines[:first])
    chosen = [line for line in lines
              if 'FusedOptimWrapperConstructor:' in line]
    assert len(chosen) == 1 and 'SGD with fused=True' in chosen[0], chosen
    with open(log) as f:
        text = f.read()
    assert 'System environment:' in text and 'Config:' in text
    assert 'Hooks will be executed in the following order' in text


def test_help_prints_no_warning():
    out = run(osp.join(ROOT, 'tools', 'train.py'), '-h', console=True)
    assert out.startswith('usage: train.py'), out[:500]


def test_tools_import_mmekd_before_mmpretrain():
    """mmekd silences mmcv-lite's import warning, so it must be imported
    before anything that imports mmcv (every tool, even for -h)."""
    for path in glob.glob(osp.join(ROOT, 'tools', '**', '*.py'),
                          recursive=True):
        tree = ast.parse(open(path).read())
        names = [alias.name if isinstance(node, ast.Import) else node.module
                 for node in tree.body
                 if isinstance(node, (ast.Import, ast.ImportFrom))
                 for alias in node.names]
        roots = [str(n).split('.')[0] for n in names]
        if 'mmekd' not in roots:
            continue
        first = roots.index('mmekd')
        assert not {'mmpretrain', 'mmcv'} & set(roots[:first]), path

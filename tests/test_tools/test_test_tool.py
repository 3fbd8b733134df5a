# Copyright (c) mmekd contributors. All rights reserved.
"""tools/test.py and --resume end to end: safe loading, key checks."""
import functools
import http.server
import os
import os.path as osp
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.runner.checkpoint import CheckpointLoader
from tool_loader import load_tool

from mmekd.registry import MODELS
from mmekd.utils import UnsafeCheckpointError

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = f"""
_base_ = {osp.join(REPO, 'configs', 'ddnn_demo_digits.py')!r}
model = dict(
    backbone=dict(depth=18, stem_channels=4, base_channels=4,
                  sub_depths=[[1, 1, 1, 1]]),
    head=dict(in_channels=32))
train_dataloader = dict(batch_size=16, dataset=dict(indices=32))
val_dataloader = dict(batch_size=16, dataset=dict(indices=32))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1)
"""


class _RunsCode:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A tiny DDNN config, checkpoints to test, and the tool runs on them
    (started together: each spends most of its time importing)."""
    tmp = tmp_path_factory.mktemp('test_tool')
    cfg_path = tmp / 'cfg.py'
    cfg_path.write_text(CONFIG)
    cfg = str(cfg_path)
    model = MODELS.build(Config.fromfile(cfg).model)
    state = model.state_dict()
    torch.save({'state_dict': state}, tmp / 'good.pth')
    marker = tmp / 'pwned'
    torch.save({'state_dict': state, 'x': _RunsCode(marker)},
               tmp / 'evil.pth')
    # A checkpoint of another model, with the meta MMEngine writes.
    torch.save({'state_dict': nn.Linear(3, 4).state_dict(),
                'meta': {'experiment_name': 'linear_probe_20261203_101010',
                         'cfg': "model = dict(type='ImageClassifier', "
                                "head=dict(type='LinearClsHead', "
                                'num_classes=4))'}},
               tmp / 'other.pth')
    shaped = {k: v.clone() for k, v in state.items()}
    shaped['head.fc.weight'] = torch.zeros(3, 3)
    torch.save({'state_dict': shaped}, tmp / 'shaped.pth')
    # Trained with shared BatchNorm statistics (private_norm=False): no
    # per-net sets for the default private_norm='stats'.
    shared = {k: v for k, v in state.items() if '.sub_stats.' not in k}
    assert len(shared) < len(state)
    torch.save({'state_dict': shared}, tmp / 'shared_stats.pth')

    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    # The config a training run saved in the work dir: a test there must
    # not overwrite it.
    (tmp / 'w_good').mkdir()
    (tmp / 'w_good' / 'cfg.py').write_text('# saved by the training run\n')
    runs = {
        name: ['test.py', cfg, str(tmp / f'{name}.pth')]
        for name in ('good', 'evil', 'other', 'shaped', 'shared_stats')
    }
    # 5 batches asked of a 2-batch training loader (32 images, 16 a batch).
    runs['recalibrated'] = [
        'test.py', cfg, str(tmp / 'good.pth'), '--net', 'sub0',
        '--recalibrate-bn', '5']
    runs['evil_resume'] = [
        'train.py', cfg, '--resume', str(tmp / 'evil.pth')]
    procs = {
        name: subprocess.Popen(
            [sys.executable, osp.join(REPO, 'tools', tool), *args,
             '--work-dir', str(tmp / f'w_{name}')],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True) for name, (tool, *args) in runs.items()
    }
    results = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out)
    return dict(model=model, marker=marker, results=results, good=str(
        tmp / 'good.pth'), tmp=tmp)


def test_test_tool_good_checkpoint(setup):
    rc, out = setup['results']['good']
    assert rc == 0, out[-3000:]
    assert '| full |' in out


def test_test_tool_keeps_the_training_config(setup):
    """The test run dumps its config into its own timestamped folder."""
    work = setup['tmp'] / 'w_good'
    assert (work / 'cfg.py').read_text() == '# saved by the training run\n'
    dumped = list(work.glob('*/cfg.py'))
    assert len(dumped) == 1 and 'DDNNClassifier' in dumped[0].read_text()


def test_test_tool_recalibrates_bn(setup):
    rc, out = setup['results']['recalibrated']
    assert rc == 0, out[-3000:]
    assert 'BatchNorm statistics of sub0 recalibrated on 2 training ' \
        'batches (5 asked: the training dataloader is shorter)' in out
    assert '5 batches asked, but the dataloader has only 2' in out
    assert '| sub0 |' in out


def test_test_tool_checkpoint_with_shared_statistics(setup):
    rc, out = setup['results']['shared_stats']
    assert rc == 0, out[-3000:]
    assert 'has no per-net BatchNorm statistics' in out, out[-3000:]
    assert '| sub0 |' in out


@pytest.mark.parametrize('run', ['evil', 'evil_resume'])
def test_refuses_code_in_checkpoint(setup, run):
    """tools/test.py CKPT and tools/train.py --resume CKPT."""
    rc, out = setup['results'][run]
    assert rc != 0
    assert 'Refusing to load checkpoint' in out and 'system' in out, \
        out[-3000:]
    assert 'Traceback' not in out
    assert not setup['marker'].exists()


def test_test_tool_checkpoint_of_another_model(setup):
    rc, out = setup['results']['other']
    assert rc != 0
    n = len(setup['model'].state_dict())
    assert f"0 of the model's {n} tensors would be loaded" in out, out
    assert 'missing in the checkpoint' in out
    assert 'backbone.conv1.weight' in out
    assert 'not in the model (2):' in out
    assert 'Traceback' not in out
    # Once, on one line, naming the config stored in the checkpoint.
    lines = [line for line in out.splitlines() if 'does not fit' in line]
    assert len(lines) == 1, out[-3000:]
    assert lines[0].startswith('test: error: checkpoint ')
    assert ("It was trained with config 'linear_probe' (experiment "
            'linear_probe_20261203_101010; its stored config has model '
            'ImageClassifier, head LinearClsHead num_classes=4)') in lines[0]


def test_test_tool_checkpoint_with_other_shapes(setup):
    rc, out = setup['results']['shaped']
    assert rc != 0
    assert 'shape mismatch (1)' in out, out
    assert 'head.fc.weight: checkpoint (3, 3), model (10, 32)' in out
    assert 'Traceback' not in out


def test_http_checkpoints_are_loaded_safely(setup, tmp_path, monkeypatch):
    model, good = setup['model'], setup['good']
    evil = tmp_path / 'evil.pth'
    torch.save({'x': _RunsCode(tmp_path / 'pwned')}, evil)
    os.link(good, tmp_path / 'good.pth')
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'hub'))
    # Even with torch's opt-out of weights_only set.
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    url = f'http://127.0.0.1:{server.server_address[1]}'
    try:
        ckpt = CheckpointLoader.load_checkpoint(f'{url}/good.pth')
        assert ckpt['state_dict'].keys() == model.state_dict().keys()
        with pytest.raises(UnsafeCheckpointError, match='Refusing'):
            CheckpointLoader.load_checkpoint(f'{url}/evil.pth')
        assert not (tmp_path / 'pwned').exists()
    finally:
        server.shutdown()


# ---------------------------------------------------------------------- #
# Command-line validation of tools/train.py and tools/test.py (in-process)
# ---------------------------------------------------------------------- #
def _args(tool, argv, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [tool.__file__, *argv])
    return tool.parse_args()


@pytest.mark.parametrize('argv, message', [
    (['--resume', '/no/such.pth'], '--resume: checkpoint /no/such.pth'),
    (['--auto-scale-lr', '--cfg-options', 'auto_scale_lr=None'], None),
    (['--cfg-options', 'optim_wrapper.type=AmpOptimWrapper'],
     'optim_wrapper.type=AmpOptimWrapper .* needs a CUDA GPU'),
    # Would replace mmekd.AtomicCheckpointHook: refused, not rewritten.
    (['--cfg-options', 'default_hooks.checkpoint.type=CheckpointHook'],
     "default_hooks.checkpoint.type='CheckpointHook' is MMEngine's plain "
     'CheckpointHook'),
    (['--cfg-options', 'default_hooks.checkpoint.type=mmengine.'
      'CheckpointHook'], "type='mmengine.CheckpointHook' is MMEngine's"),
])
def test_train_cli_validation(tmp_path, monkeypatch, argv, message):
    train = load_tool('train')
    cfg_path = tmp_path / 'cfg.py'
    cfg_path.write_text(CONFIG)
    cfg = Config.fromfile(str(cfg_path))
    if message is None:  # the config has no auto_scale_lr
        cfg.pop('auto_scale_lr', None)
        argv, message = ['--auto-scale-lr'], 'has no auto_scale_lr'
    if 'Amp' in ' '.join(argv + [message]) and torch.cuda.is_available():
        pytest.skip('needs a machine without CUDA')
    args = _args(train, [str(cfg_path), *argv], monkeypatch)
    with pytest.raises(SystemExit, match=message):
        train.merge_args(cfg, args)


def test_train_cli_amp_keeps_the_nonfinite_check(tmp_path, monkeypatch):
    """--amp swaps in the safe AMP wrapper (bfloat16 autocast on a CPU):
    the non-finite check stays, with the config's other arguments."""
    train = load_tool('train')
    cfg_path = tmp_path / 'cfg.py'
    cfg_path.write_text(CONFIG)
    args = _args(train, [str(cfg_path), '--amp', '--on-nonfinite', 'skip'],
                 monkeypatch)
    cfg = train.merge_args(Config.fromfile(str(cfg_path)), args)
    assert cfg.optim_wrapper.type == 'mmekd.SafeAmpOptimWrapper'
    assert cfg.optim_wrapper.on_nonfinite == 'skip'


def test_train_cli_on_nonfinite(tmp_path, monkeypatch):
    train = load_tool('train')
    cfg_path = tmp_path / 'cfg.py'
    cfg_path.write_text(CONFIG)
    args = _args(train, [str(cfg_path), '--on-nonfinite', 'skip'],
                 monkeypatch)
    cfg = train.merge_args(Config.fromfile(str(cfg_path)), args)
    assert cfg.optim_wrapper.type == 'mmekd.SafeOptimWrapper'
    assert cfg.optim_wrapper.on_nonfinite == 'skip'
    # The config says what runs: the checkpoint hook is the config's own.
    assert cfg.default_hooks.checkpoint.type == Config.fromfile(
        str(cfg_path)).default_hooks.checkpoint.type
    assert cfg.default_hooks.exact_resume.type == 'mmekd.ExactResumeHook'


@pytest.mark.parametrize('argv, message', [
    (['/no/such.pth'], 'checkpoint /no/such.pth does not exist'),
    (['GOOD', '--out-item', 'metrics'], '--out-item needs --out'),
])
def test_test_cli_validation(tmp_path, monkeypatch, argv, message):
    test = load_tool('test')
    cfg_path = tmp_path / 'cfg.py'
    cfg_path.write_text(CONFIG)
    (tmp_path / 'good.pth').write_bytes(b'')
    argv = [str(tmp_path / 'good.pth') if a == 'GOOD' else a for a in argv]
    args = _args(test, [str(cfg_path), *argv], monkeypatch)
    with pytest.raises(SystemExit, match=message):
        test.merge_args(Config.fromfile(str(cfg_path)), args)

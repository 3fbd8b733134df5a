# Copyright (c) mmekd contributors. All rights reserved.
"""The command line every tool shares: one line per refusal, and
``--cfg-options`` on every tool that reads a config."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from tool_loader import REPO, load_tool, tool_path

from mmekd.utils.checkpoint_keys import CheckpointMismatchError
from mmekd.utils.cli import tool_main
from mmekd.utils.refusal import RefusalError, one_line

sys.path[:0] = [osp.join(osp.dirname(__file__), '..', 'test_apis'),
                osp.join(osp.dirname(__file__), '..', 'test_security')]
from payloads import RunsShell  # noqa: E402
from tiny_ddnn import tiny_model_files  # noqa: E402


def test_tool_main_turns_a_refusal_into_one_line():
    def main():
        raise CheckpointMismatchError('checkpoint x does not fit:\n'
                                      '  missing (2):\n    a\n    b')

    with pytest.raises(SystemExit) as e:
        tool_main(main, 'mytool')()
    assert e.value.code == ('mytool: error: checkpoint x does not fit: '
                            'missing (2): a b')
    # Still the built-in it was (callers catching ValueError keep working).
    assert issubclass(CheckpointMismatchError, ValueError)
    assert one_line(RefusalError('')) == 'RefusalError'


def test_tool_main_passes_other_errors():
    def main():
        raise ZeroDivisionError('a bug, with its traceback')

    with pytest.raises(ZeroDivisionError):
        tool_main(main, 'mytool')()


def test_tool_main_writes_the_refusal_to_the_log_file(tmp_path):
    from mmengine.logging import MMLogger
    log = str(tmp_path / 'run.log')
    MMLogger.get_instance('test_cli_log', log_file=log)

    def main():
        raise FileNotFoundError('config /no/such.py does not exist')

    with pytest.raises(SystemExit):
        tool_main(main, 'mytool')()
    with open(log) as f:
        assert 'mytool: error: config /no/such.py does not exist' in f.read()


@pytest.fixture(scope='module')
def evil(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('cli')
    cfg, ckpt, model = tiny_model_files(tmp)
    evil = str(tmp / 'evil.pth')
    torch.save({'state_dict': model.state_dict(),
                'x': RunsShell(tmp / 'pwned')}, evil)
    return dict(tmp=tmp, cfg=cfg, ckpt=ckpt, evil=evil)


@pytest.mark.slow
def test_export_subnet_refuses_an_unsafe_checkpoint_in_one_line(evil):
    """Before: an 8-frame traceback, then the refusal."""
    proc = subprocess.run(
        [sys.executable, tool_path('export_subnet'), evil['cfg'],
         evil['evil'], str(evil['tmp'] / 'out'), '--net', 'sub0'],
        capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('export_subnet: error: Refusing to load '
                               f"checkpoint {evil['evil']}")
    assert not (evil['tmp'] / 'pwned').exists()


@pytest.mark.parametrize('tool, argv', [
    ('export_subnet', ['CFG', 'CKPT', 'OUT', '--net', 'sub0']),
    ('deploy/export_onnx', ['CFG', 'CKPT', 'OUT/m.onnx', '--net', 'sub0']),
    ('analysis/subnet_costs', ['CFG', 'CKPT', '--out-dir', 'OUT']),
    ('analysis/eval_recalibrated', ['CFG', 'CKPT']),
    ('analysis/benchmark_inference', ['CFG', 'CKPT']),
    ('extract_slim', ['CFG', 'CKPT', 'OUT']),
])
def test_every_config_tool_takes_cfg_options(evil, tool, argv):
    """--cfg-options reaches the config: a narrower head no longer fits
    the checkpoint, and the tool says so in one line."""
    out = str(evil['tmp'] / tool.replace('/', '_'))
    argv = [a.replace('CFG', evil['cfg']).replace('CKPT', evil['ckpt'])
            .replace('OUT', out) for a in argv]
    main = load_tool(tool).main
    with pytest.raises(SystemExit) as e:
        main(argv + ['--cfg-options', 'model.head.num_classes=3'])
    message = str(e.value.code)
    assert '\n' not in message
    assert message.startswith(f"{osp.basename(tool)}: error: "), message
    assert 'head.fc' in message or 'fc.weight' in message, message


def test_convert_torchvision_takes_cfg_options_and_refuses_in_one_line(
        tmp_path, evil):
    """torchvision ResNet-18 weights fit the ImageNet DDNN config only
    once --cfg-options make its full net a ResNet-18."""
    import torchvision
    weights = str(tmp_path / 'resnet18.pth')
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    config = osp.join(REPO, 'configs', 'ddnn_r34_imagenet.py')
    main = load_tool('convert_torchvision').main
    out = str(tmp_path / 'out.pth')
    with pytest.raises(SystemExit, match='^convert_torchvision: error: the '
                       'torchvision weights do not fit'):
        main([config, weights, out])
    main([config, weights, out, '--cfg-options', 'model.backbone.depth=18',
          'model.backbone.sub_stage_blocks=[[1,1,1,1]]'])
    assert osp.isfile(out)
    with pytest.raises(SystemExit) as e:
        main([config, evil['evil'], out])
    assert str(e.value.code).startswith(
        'convert_torchvision: error: Refusing to load checkpoint')
    assert not (evil['tmp'] / 'pwned').exists()

# Copyright (c) mmekd contributors. All rights reserved.
import os.path as osp
import subprocess
import sys

import pytest
import torch
from tool_loader import REPO as ROOT
from tool_loader import load_tool, tool_path
from torch.testing import assert_close

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', 'test_apis'))
from tiny_ddnn import tiny_model_files  # noqa: E402

TOOL = tool_path('export_subnet')

# Stock MMPretrain, no mmekd: build the exported model, load the exported
# checkpoint and save its logits on a fixed input.
STOCK = """
import sys, torch, mmpretrain
model = mmpretrain.get_model(sys.argv[1], pretrained=sys.argv[2])
x = torch.load(sys.argv[3], weights_only=True)
torch.save(model(x), sys.argv[4])
assert not any(m == 'mmekd' or m.startswith('mmekd.') for m in sys.modules), \
    'mmekd was imported'
"""


def cli(monkeypatch, *args):
    """Run the tool's main() in this process (imports are slow under load)."""
    monkeypatch.setattr(sys, 'argv', [TOOL, *args])
    load_tool('export_subnet').main()


def run(*args):
    return subprocess.run([sys.executable, *args],
                          capture_output=True,
                          text=True,
                          cwd=ROOT)


def test_export_cli_loads_in_stock_mmpretrain(tmp_path, monkeypatch,
                                              capsys):
    cfg, ckpt, model = tiny_model_files(tmp_path, private_norm=True)
    out = osp.join(tmp_path, 'out')
    cli(monkeypatch, cfg, ckpt, out, '--net', 'sub0')
    exp_cfg = osp.join(out, 'tiny_ddnn_sub0-resnet18.py')
    exp_ckpt = osp.join(out, 'tiny_ddnn_sub0-resnet18.pth')
    stdout = capsys.readouterr().out
    assert exp_cfg in stdout and exp_ckpt in stdout

    x = torch.randn(2, 3, 16, 16)
    torch.save(x, osp.join(tmp_path, 'x.pth'))
    script = osp.join(tmp_path, 'stock.py')
    with open(script, 'w') as f:
        f.write(STOCK)
    proc = run(script, exp_cfg, exp_ckpt, osp.join(tmp_path, 'x.pth'),
               osp.join(tmp_path, 'y.pth'))
    assert proc.returncode == 0, proc.stderr
    logits = torch.load(osp.join(tmp_path, 'y.pth'), weights_only=True)
    assert_close(
        logits, model.forward_nets(x, ['sub0'])[0]['sub0'], rtol=0,
        atol=1e-6)


def test_export_cli_errors(tmp_path, monkeypatch):
    cfg, ckpt, _ = tiny_model_files(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli(monkeypatch, cfg, ckpt, str(tmp_path), '--net', 'sub5')
    assert "unknown net 'sub5'; this model has ['full', 'sub0', 'sub1']" in \
        str(e.value.code)
    with pytest.raises(SystemExit) as e:
        cli(monkeypatch, cfg, osp.join(tmp_path, 'nope.pth'), str(tmp_path),
            '--net', 'sub0')
    assert 'does not exist' in str(e.value.code)

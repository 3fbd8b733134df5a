# Copyright (c) mmekd contributors. All rights reserved.
import os.path as osp
import sys

import numpy as np
import onnx
import pytest
import torch
from tool_loader import load_tool, tool_path

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', 'test_apis'))
from tiny_ddnn import tiny_model_files  # noqa: E402

from mmekd.apis import onnx_logits  # noqa: E402

TOOL = tool_path('deploy/export_onnx')
ATOL = 1e-4


def run_tool(monkeypatch, *args):
    tool = load_tool('deploy/export_onnx')
    monkeypatch.setattr(sys, 'argv', [TOOL, *args])
    tool.main()


@pytest.mark.parametrize('net', ['sub0', 'sub1'])
def test_onnx_matches_pytorch(tmp_path, monkeypatch, net):
    cfg, ckpt, model = tiny_model_files(tmp_path, private_norm=True)
    out = osp.join(tmp_path, f'{net}.onnx')
    run_tool(monkeypatch, cfg, ckpt, out, '--net', net)
    # Independent check against the DDNN model itself, other batch size.
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model.forward_nets(x, [net])[0][net].numpy()
    got = onnx_logits(out, x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    assert not np.allclose(got, model.forward_nets(x, ['full'])[0][
        'full'].detach().numpy(), atol=1e-2)
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta['net'] == net and meta['input_size'] == '16x16'
    assert meta['mean'] == '[120.0, 110.0, 100.0]' and meta['to_rgb'] == \
        'True'


def test_onnx_unknown_net(tmp_path, monkeypatch):
    cfg, ckpt, _ = tiny_model_files(tmp_path)
    with pytest.raises(SystemExit, match="unknown net 'big'"):
        run_tool(monkeypatch, cfg, ckpt, osp.join(tmp_path, 'x.onnx'),
                 '--net', 'big')

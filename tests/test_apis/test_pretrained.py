# Copyright (c) mmekd contributors. All rights reserved.
"""torchvision ResNet weights -> a DDNN (tools/convert_torchvision.py)."""
import os.path as osp
import re
import sys

import pytest
import torch
from tool_loader import REPO, load_tool
from torch.testing import assert_close

from mmekd.apis import build_model, load_ddnn_model, load_torchvision_weights

torchvision = pytest.importorskip('torchvision')
IMAGENET = osp.join(REPO, 'configs', 'ddnn_r34_imagenet.py')


def write_cfg(tmp_path, depth=34, sub_depths=((2, 2, 2, 2), ), classes=1000,
              private_norm='stats', private_fc=False):
    path = osp.join(tmp_path, f'r{depth}_{classes}_{private_norm}.py')
    width = 2048 if depth >= 50 else 512
    with open(path, 'w') as f:
        f.write(f'_base_ = {IMAGENET!r}\n'
                f'model = dict(backbone=dict(depth={depth}, sub_depths='
                f'{[list(s) for s in sub_depths]}, private_norm='
                f'{private_norm!r}), head=dict(num_classes={classes}, '
                f'in_channels={width}, private_fc={private_fc}))\n')
    return path


def torchvision_file(tmp_path, arch, randomize_norms):
    """A torchvision ResNet with random weights and statistics (no
    download), saved as torchvision publishes it (a plain state dict)."""
    torch.manual_seed(0)
    tv = randomize_norms(getattr(torchvision.models, arch)(weights=None))
    path = osp.join(tmp_path, f'{arch}.pth')
    torch.save(tv.state_dict(), path)
    return tv.eval(), path


def convert(monkeypatch, *args):
    monkeypatch.setattr(sys, 'argv', ['convert_torchvision.py', *args])
    load_tool('convert_torchvision').main()


@pytest.mark.parametrize('arch, depth, sub_depths, private_norm', [
    ('resnet18', 18, [[1, 1, 1, 1]], 'stats'),
    ('resnet34', 34, [[2, 2, 2, 2]], 'stats'),
    ('resnet34', 34, [[2, 2, 2, 2], [1, 1, 1, 1]], True),
    ('resnet50', 50, [[2, 2, 2, 2]], 'stats'),
])
def test_full_net_logits_equal_torchvision(tmp_path, monkeypatch,
                                           randomize_norms, arch, depth,
                                           sub_depths, private_norm):
    tv, tv_path = torchvision_file(tmp_path, arch, randomize_norms)
    cfg = write_cfg(tmp_path, depth, sub_depths, private_norm=private_norm,
                    private_fc=private_norm is True)
    out = osp.join(tmp_path, 'ddnn.pth')
    convert(monkeypatch, cfg, tv_path, out)
    # Loads strictly (every tensor of every net) as training's load_from.
    model = load_ddnn_model(cfg, out)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model.forward_nets(x, model.net_names)[0]
        assert_close(logits['full'], tv(x), rtol=0, atol=1e-5)
    # Every sub-net's own statistics / norms / classifier are the full
    # net's pretrained ones.
    sd = model.state_dict()
    copies = [k for k in sd if any(
        p in k for p in ('.sub_stats.', '.sub_norms.', '.sub_fcs.'))]
    assert copies
    for key in copies:
        full_key = re.sub(r'\.sub_fcs\.[^.]+\.', '.fc.', re.sub(
            r'\.sub_(stats|norms)\.[^.]+\.', '.', key))
        assert torch.equal(sd[key], sd[full_key]), key
    tv_sd = tv.state_dict()
    assert torch.equal(sd['head.fc.weight'], tv_sd['fc.weight'])
    assert torch.equal(sd['backbone.layer1.0.bn1.running_var'],
                       tv_sd['layer1.0.bn1.running_var'])


def test_no_head_keeps_the_initial_classifier(tmp_path, randomize_norms):
    tv, _ = torchvision_file(tmp_path, 'resnet34', randomize_norms)
    model = build_model(write_cfg(tmp_path, classes=7))
    initial = model.head.fc.weight.detach().clone()
    with pytest.raises(ValueError, match=r'(?s)head\.fc\.weight \(1000, '
                       r'512\) vs \(7, 512\).*drop it \(head=False, '
                       r'--no-head\)'):
        load_torchvision_weights(model, tv.state_dict())
    kept = load_torchvision_weights(model, tv.state_dict(), head=False)
    assert kept == ('head.fc.weight', 'head.fc.bias')
    assert torch.equal(model.head.fc.weight, initial)
    assert torch.equal(model.backbone.conv1.weight, tv.conv1.weight)


def test_other_depth_is_an_error(tmp_path, monkeypatch, randomize_norms):
    _, tv_path = torchvision_file(tmp_path, 'resnet18', randomize_norms)
    with pytest.raises(SystemExit, match=r'(?s)do not fit this model.*'
                       r'missing \(\d+\): backbone\.layer1\.2\.'):
        convert(monkeypatch, write_cfg(tmp_path), tv_path,
                osp.join(tmp_path, 'x.pth'))
    assert not osp.exists(osp.join(tmp_path, 'x.pth'))

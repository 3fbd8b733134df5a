# Copyright (c) mmekd contributors. All rights reserved.
import csv
import json
import os
import os.path as osp
import sys

import mmpretrain
import pytest
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmpretrain.apis import ModelHub
from mmpretrain.models import ImageClassifier
from tool_loader import REPO, load_tool, tool_path

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', 'test_apis'))
from tiny_ddnn import write_config  # noqa: E402

from mmekd.apis import input_size, net_costs  # noqa: E402
from mmekd.utils.flops import (complexity,  # noqa: E402
                               quiet_flop_counter)

TOOL = tool_path('analysis/subnet_costs')


def conv_flops(c_in, c_out, k, hw):
    return c_in * c_out * k * k * hw * hw


def test_costs_match_hand_count(tmp_path):
    cfg = Config.fromfile(write_config(osp.join(tmp_path, 'c.py')))
    assert input_size(cfg) == (16, 16)  # Resize(16, 16) in the test pipeline
    rows = {r['net']: r for r in net_costs(cfg)}
    # sub1 = [1, 2, 1, 1] CIFAR BasicBlocks, 8/16/32/64 channels, 16x16 in:
    # stem 3->8, stage1 (16x16) 3 blocks of 2 convs 8->8; stage s>1 halves
    # the size: first block c/2->c 3x3 + c->c 3x3 + 1x1 projection, then
    # (blocks - 1) x 2 convs c->c; GAP adds one op per input element.
    expected = conv_flops(3, 8, 3, 16) + 2 * conv_flops(8, 8, 3, 16)
    size, blocks = 16, [1, 2, 1, 1]
    for s, c in enumerate([16, 32, 64]):
        size //= 2
        expected += (conv_flops(c // 2, c, 3, size) + conv_flops(c, c, 3, size)
                     + conv_flops(c // 2, c, 1, size))
        expected += (blocks[s + 1] - 1) * 2 * conv_flops(c, c, 3, size)
    bn_and_relu = rows['sub1']['flops'] - expected
    # Only BatchNorm (and the pooling) come on top of the convolutions.
    assert 0 < bn_and_relu < 0.05 * expected, (rows['sub1']['flops'],
                                               expected)
    assert rows['sub0']['plain_type'] == 'ResNet_CIFAR'
    assert rows['sub1']['plain_type'] == 'mmekd.DepthDynamicResNetCIFAR'
    assert rows['full']['flops'] > rows['sub0']['flops'] > rows['sub1'][
        'flops']

    # Same numbers as mmpretrain's own ResNet-18 counted the same way.
    ref = ImageClassifier(
        backbone=dict(
            type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=64))
    assert complexity(ref, (3, 16, 16)) == dict(
        flops=rows['sub0']['flops'], params=rows['sub0']['params'])
    assert rows['sub0']['params'] == sum(p.numel() for p in ref.parameters())


def test_subnet_costs_tool(tmp_path, monkeypatch, capsys):
    cfg = write_config(osp.join(tmp_path, 'tiny.py'))
    results = osp.join(tmp_path, 'metrics.json')
    with open(results, 'w') as f:
        json.dump({'full/top1': 91.5, 'sub0/top1': 88.25, 'sub1/top1': 80.0},
                  f)
    out = osp.join(tmp_path, 'out')
    tool = load_tool('analysis/subnet_costs')
    monkeypatch.setattr(sys, 'argv',
                        [TOOL, cfg, '--results', results, '--out-dir', out])
    tool.main()
    stdout = capsys.readouterr().out
    assert '| sub0 | resnet18 | [2, 2, 2, 2] | ResNet_CIFAR | 16x16 |' in \
        stdout
    assert '| 88.25 |' in stdout
    with open(osp.join(out, 'tiny_costs.csv')) as f:
        rows = {r['net']: r for r in csv.DictReader(f)}
    costs = {r['net']: r for r in net_costs(cfg)}
    assert int(rows['sub1']['flops']) == costs['sub1']['flops']
    assert float(rows['full']['top1']) == 91.5
    png = osp.join(out, 'tiny_costs.png')
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert osp.isfile(osp.join(out, 'tiny_costs.md'))


def test_plot_is_readable(tmp_path):
    """The demo's case: three nets with equal top-1 (99.15): their labels
    do not collide, and the accuracy axis spans the data instead of
    0-100 %, where every difference disappears."""
    cfg = write_config(osp.join(tmp_path, 'tiny.py'))
    rows = net_costs(cfg)
    png = osp.join(tmp_path, 'p.png')
    tool = load_tool('analysis/subnet_costs')
    results = {'full': {1: 99.15}, 'sub0': {1: 99.15}, 'sub1': {1: 99.15}}
    assert tool.plot(rows, results, 't', png) == (98.65, 99.65)
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # 0.3 points apart: the axis spans them, at least 1 point in all.
    results = {'full': {1: 99.45}, 'sub0': {1: 99.3}, 'sub1': {1: 99.15}}
    assert tool.plot(rows, results, 't', png) == (98.8, 99.8)
    # 20 points apart: a quarter of the range on each side.
    results = {'full': {1: 80.0}, 'sub0': {1: 70.0}, 'sub1': {1: 60.0}}
    assert tool.plot(rows, results, 't', png) == (55.0, 85.0)


def test_labels_never_collide(tmp_path):
    """Points on one accuracy and close in FLOPs, in two series (a DDNN's
    nets and the nets alone): every label box is clear of the others and
    inside the axes."""
    from mmekd.visualization import PlotSeries, plot_accuracy_vs_flops
    ddnn = [(f, 99.15, f'net{i} (resnet{i}): 99.15')
            for i, f in enumerate((4e6, 9e6, 18e6, 19e6))]
    alone = [(f, 99.15, f'resnet{i} alone: 99.15')
             for i, f in enumerate((4e6, 9e6, 18e6))]
    info = plot_accuracy_vs_flops(
        [PlotSeries('DDNN', ddnn), PlotSeries('alone', alone, 's', False)],
        str(tmp_path / 'p.png'), 'collisions')
    boxes = info['label_boxes']
    assert len(boxes) == 7
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or \
                b.y1 <= a.y0, (a, b)


def test_without_results_says_why_no_png(tmp_path, monkeypatch, capsys):
    cfg = write_config(osp.join(tmp_path, 'tiny.py'))
    out = osp.join(tmp_path, 'out')
    monkeypatch.setattr(sys, 'argv', [TOOL, cfg, '--out-dir', out])
    load_tool('analysis/subnet_costs').main()
    stdout = capsys.readouterr().out
    assert 'no PNG written: the top-1 vs FLOPs plot needs accuracies; pass ' \
        '--results X.json, written by tools/test.py CONFIG CKPT --out ' \
        'X.json --out-item metrics' in stdout
    assert sorted(os.listdir(out)) == ['tiny_costs.csv', 'tiny_costs.md']


@pytest.mark.slow
def test_family_costs_are_mmpretrains_count_of_the_stock_models():
    """configs/ddnn_deit-small_in1k.py: every net's row is what MMPretrain's
    own FLOP tool (tools/analysis_tools/get_flops.py: ``get_model``,
    ``forward = extract_feat``, mmengine's ``get_model_complexity_info``)
    counts on the stock model of that net: MMPretrain's
    deit-small_4xb256_in1k for the full net, the baselines for the 6- and
    9-layer nets (MMPretrain has no config of those depths)."""
    rows = {r['net']: r for r in net_costs(
        osp.join(REPO, 'configs', 'ddnn_deit-small_in1k.py'))}
    stock = {
        'full': 'deit-small_4xb256_in1k',
        'sub0': osp.join(REPO, 'configs', 'baselines',
                         'vit-6l_deit-small-recipe_in1k.py'),
        'sub1': osp.join(REPO, 'configs', 'baselines',
                         'vit-9l_deit-small-recipe_in1k.py'),
    }
    assert sorted(rows) == sorted(stock)
    for net, source in stock.items():
        model = mmpretrain.get_model(source)
        model.eval()
        model.forward = model.extract_feat
        with quiet_flop_counter():
            info = get_model_complexity_info(
                model, (3, 224, 224), show_table=False, show_arch=False)
        assert rows[net]['input_size'] == (224, 224)
        assert (rows[net]['flops'], rows[net]['params']) == (
            info['flops'], info['params']), net
    # MMPretrain's metafile has the same parameter count (its FLOPs,
    # 4607954304, come from an older counter).
    assert rows['full']['params'] == ModelHub.get(
        'deit-small_4xb256_in1k').metadata.parameters == 22050664
    assert rows['full']['flops'] > rows['sub1']['flops'] > rows['sub0'][
        'flops']

# Copyright (c) mmekd contributors. All rights reserved.
"""tools/benchmark_epoch.py: real epoch vs synthetic step, on CPU."""
import json
import os.path as osp
import sys

import pytest
from tool_loader import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'test_datasets'))
from test_cifar import write_fake_cifar100  # noqa: E402

benchmark_epoch = load_tool('benchmark_epoch')


def tiny_args(root):
    return [
        osp.join(ROOT, 'configs', 'ddnn_r34_cifar100_fastdata.py'),
        '--cfg-options', f'train_dataloader.dataset.dataset.data_root={root}',
        'train_dataloader.dataset.dataset.val_per_class=1',
        'train_dataloader.batch_size=32', 'model.backbone.stem_channels=4',
        'model.backbone.base_channels=4', 'model.head.in_channels=32'
    ]


def test_epoch_and_synthetic_throughput(tmp_path):
    root = write_fake_cifar100(str(tmp_path / 'data'), per_class=3)
    out = str(tmp_path / 'r.json')
    # 200 training images (2 per class), batch 32: 7 iterations.
    results = benchmark_epoch.main(
        ['--warmup', '2', '--steps', '2', '--json', out] + tiny_args(root))
    assert results['iterations'] == 7
    assert results['batch_size'] == 32
    assert results['real_img_s'] > 0 and results['synthetic_img_s'] > 0
    assert results['epoch_vs_synthetic'] == pytest.approx(
        results['real_img_s'] / results['synthetic_img_s'], abs=1e-3)
    with open(out) as f:
        assert json.load(f)['config'].endswith('_fastdata.py')


def test_too_few_iterations_is_an_error(tmp_path):
    root = write_fake_cifar100(str(tmp_path / 'data'), per_class=3)
    with pytest.raises(SystemExit, match='not enough after --warmup 10'):
        benchmark_epoch.main(['--warmup', '10', '--steps', '1'] +
                             tiny_args(root))

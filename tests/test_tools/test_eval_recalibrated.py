# Copyright (c) mmekd contributors. All rights reserved.
"""tools/analysis/eval_recalibrated.py: the table and JSON say how many
batches each column actually averaged over."""
import json
import os.path as osp
import sys

import pytest
from tool_loader import load_tool

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', 'test_apis'))
from tiny_ddnn import tiny_model_files  # noqa: E402


def test_short_loader_columns_report_batches_used(tmp_path, monkeypatch,
                                                  capsys):
    base, ckpt, _ = tiny_model_files(tmp_path)
    cfg = osp.join(tmp_path, 'short.py')
    with open(cfg, 'w') as f:  # 3 training batches of 4, 8 test images
        f.write(f'_base_ = {base!r}\n'
                'train_dataloader = dict(dataset=dict(indices=12))\n'
                'test_dataloader = dict(dataset=dict(indices=8))\n')
    out = osp.join(tmp_path, 'r.json')
    monkeypatch.setattr(sys, 'argv', [
        'eval_recalibrated.py', cfg, ckpt, '--num-batches', '2', '20',
        '--nets', 'sub0', '--out', out])
    with pytest.warns(UserWarning, match='20 batches asked, but the '
                      'dataloader has only 3'):
        load_tool('analysis/eval_recalibrated').main()
    table = capsys.readouterr().out
    assert ('| net | blocks per stage | top-1 stored BN | top-1 recal. 2 '
            'batches | top-1 recal. 3 batches (20 asked) |') in table
    with open(out) as f:
        results = json.load(f)
    assert results['batches_used'] == {'2': 2, '20': 3}
    assert set(results['top1']['sub0']) == {'stored', '2', '20'}
    row = next(line for line in table.splitlines()
               if line.startswith('| sub0 |'))
    assert f"| {results['top1']['sub0']['20']:.2f} (" in row

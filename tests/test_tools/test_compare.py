# Copyright (c) mmekd contributors. All rights reserved.
"""tools/compare.py end to end on the digits demo at tiny size: the DDNN
and each of its nets alone trained and tested, one table, md/json/png."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config
from tool_loader import REPO, load_tool, tool_path

DEMO = osp.join(REPO, 'configs', 'ddnn_demo_digits.py')
# The command, on fewer images (the tool, not the nets, is tested).
TINY = ['model.backbone.stem_channels=4', 'model.backbone.base_channels=4',
        'model.head.in_channels=32', 'train_dataloader.dataset.indices=128',
        'val_dataloader.dataset.indices=64']


@pytest.fixture(scope='module')
def compared(tmp_path_factory):
    work = str(tmp_path_factory.mktemp('compare') / 'work')
    proc = subprocess.run(
        [sys.executable, tool_path('compare'), DEMO, '--epochs', '1',
         '--jobs', '2', '--work-dir', work, '--cfg-options', *TINY],
        capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    return work, proc


@pytest.mark.slow
def test_one_table_row_per_net(compared):
    work, proc = compared
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    out = proc.stdout
    for net, arch, blocks in (('full', 'resnet34', '[3,4,6,3]'),
                              ('sub0', 'resnet18', '[2,2,2,2]'),
                              ('sub1', 'resnet10', '[1,1,1,1]')):
        assert f'| {net} | {arch} | {blocks} |' in out, out
    assert 'top-1 DDNN | top-1 alone | top-1 difference' in out
    assert 'Training wall time (mean over the seeds): DDNN ' in out
    assert 'DDNN / sum alone = ' in out
    assert sorted(f for f in os.listdir(work) if f.startswith('compare')) \
        == ['compare.json', 'compare.md', 'compare.png']
    with open(osp.join(work, 'compare.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_numbers_are_those_of_the_runs(compared):
    """The report's numbers are the runs' own: tools/test.py's metrics of
    the DDNN and of each net alone, trained on the DDNN's recipe."""
    work, proc = compared
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.load(open(osp.join(work, 'compare.json')))
    ddnn = json.load(open(osp.join(work, 'ddnn_demo_digits', 'seed0',
                                   'metrics.json')))
    ddnn_cfg = Config.fromfile(osp.join(work, 'ddnn_demo_digits',
                                        'seed0.py'))
    assert ddnn_cfg.train_cfg.max_epochs == 1  # --epochs
    for n in summary['nets']:
        alone_dir = osp.join(work, n['alone_dir'], 'seed0')
        alone = json.load(open(osp.join(alone_dir, 'metrics.json')))
        assert n['ddnn']['top1'] == [ddnn[f"{n['net']}/top1"]]
        assert n['alone']['top1'] == [alone['accuracy/top1']]
        assert n['diff']['top1'][0] == pytest.approx(
            ddnn[f"{n['net']}/top1"] - alone['accuracy/top1'])
        cfg = Config.fromfile(alone_dir + '.py')
        assert cfg.model.type == 'ImageClassifier'
        for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                    'train_dataloader'):
            assert cfg[key] == ddnn_cfg[key], key
        assert n['flops'] > 0 and n['params'] > 0
    assert summary['time']['ratio'] > 0


@pytest.mark.slow
def test_skip_existing_trains_nothing_again(compared, capsys):
    work, proc = compared
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = load_tool('compare').main([
        DEMO, '--epochs', '1', '--work-dir', work, '--skip-existing',
        '--cfg-options', *TINY])
    out = capsys.readouterr().out
    assert 'training...' not in out
    assert summary == json.load(open(osp.join(work, 'compare.json')))


def test_epochs_of_an_iteration_based_config_is_refused(tmp_path):
    cfg = tmp_path / 'iters.py'
    cfg.write_text(f'_base_ = [{DEMO!r}]\n'
                   "train_cfg = dict(_delete_=True, type='IterBasedTrainLoop',"
                   ' max_iters=10)\n')
    with pytest.raises(SystemExit, match='^compare: error: --epochs: .* does '
                       'not train by epochs'):
        load_tool('compare').main([str(cfg), '--epochs', '1'])

# Copyright (c) mmekd contributors. All rights reserved.
"""tools/reproduce_cifar100.py end to end on a tiny fake CIFAR-100."""
import csv
import os.path as osp
import sys

import pytest
from mmengine.config import Config
from tool_loader import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'test_datasets'))
from test_cifar import write_fake_cifar100  # noqa: E402

reproduce = load_tool('reproduce_cifar100')

TINY = [
    'model.backbone.stem_channels=4', 'model.backbone.base_channels=4',
    'model.head.in_channels=32', 'val_dataloader.batch_size=64'
]


def run(tmp_path, split, rows, seeds, extra=()):
    root = write_fake_cifar100(str(tmp_path / 'data'), per_class=3)
    work = str(tmp_path / 'work')
    reproduce.main([
        '--data-root', root, '--split', split, '--epochs', '1', '--seeds',
        *seeds, '--rows', *rows, '--batch-size', '32', '--num-workers', '0',
        '--val-per-class', '1', '--work-dir', work, *extra, '--cfg-options',
        *TINY
    ])
    with open(osp.join(work, 'results.csv')) as f:
        return work, list(csv.DictReader(f))


def test_rows_seeds_table_and_csv(tmp_path, capsys):
    work, rows = run(tmp_path, 'val', ['resnet18', 'ddnn', 'ddnn_ekd'],
                     ['0', '1'])
    out = capsys.readouterr().out
    # resnet18: 1 net; ddnn and ddnn_ekd: full + sub0; x 2 seeds.
    assert len(rows) == (1 + 2 + 2) * 2
    assert {(r['row'], r['net']) for r in rows} == {
        ('resnet18', 'alone'), ('ddnn', 'full'), ('ddnn', 'sub0'),
        ('ddnn_ekd', 'full'), ('ddnn_ekd', 'sub0')}
    assert all(0 <= float(r['top1']) <= 100 for r in rows)
    assert '| ddnn_ekd | sub0 | ResNet-18 |' in out
    assert 'ResNet-18: ddnn_ekd - alone' in out  # the claim check
    # The generated config is the row's config plus the fixed recipe.
    with open(osp.join(work, 'ddnn', 'seed1.py')) as f:
        text = f.read()
    assert "'kl_loss': None" in text and "'at_loss': None" in text
    assert "'seed': 1" in text
    assert "'val_per_class': 1, 'subset': 'val'" in text


def test_official_test_split(tmp_path):
    work, rows = run(tmp_path, 'test', ['ddnn_ekd'], ['0'])
    assert [(r['row'], r['net']) for r in rows] == [
        ('ddnn_ekd', 'full'), ('ddnn_ekd', 'sub0')]
    with open(osp.join(work, 'ddnn_ekd', 'seed0.py')) as f:
        assert "'split': 'test'" in f.read()


def test_fast_data_and_parallel_jobs(tmp_path, capsys):
    work, rows = run(tmp_path, 'val', ['resnet18', 'ddnn'], ['0', '1'],
                     extra=['--fast-data', '--jobs', '2', '--ablation-seeds',
                            '1'])
    # resnet18 (a claim row) with every seed, the ablation row with seed 1.
    assert sorted((r['row'], r['net'], r['seed']) for r in rows) == [
        ('ddnn', 'full', '1'), ('ddnn', 'sub0', '1'),
        ('resnet18', 'alone', '0'), ('resnet18', 'alone', '1')]
    assert all(float(r['train_s']) > 0 for r in rows)
    assert 'fast data pipeline' in capsys.readouterr().out
    for row in ('resnet18', 'ddnn'):
        with open(osp.join(work, row, 'seed1.py')) as f:
            text = f.read()
        assert "'type': 'mmekd.InMemoryBatchDataset'" in text
        assert "'type': 'mmekd.GPUAugmentPreprocessor'" in text
        assert "'pipeline': [{'type': 'PackInputs'}]" in text
        # The runner's merged config: the stock CPU augmentation is gone.
        merged = Config.fromfile(osp.join(work, row, 'seed1', 'seed1.py'))
        assert 'RandomCrop' not in str(merged.train_dataloader)
        assert merged.train_dataloader.num_workers == 0


def test_bn_recalibrated_column(tmp_path, capsys):
    work, rows = run(tmp_path, 'val', ['resnet18', 'ddnn_ekd'], ['0'],
                     extra=['--recalibrate-bn', '2'])
    recal = {r['net']: r['top1_recal'] for r in rows}
    assert recal['alone'] == 'nan'  # a plain net has its own statistics
    assert 0 <= float(recal['full']) <= 100
    assert 0 <= float(recal['sub0']) <= 100
    out = capsys.readouterr().out
    assert 'top-1, BN re-estimated per net (%)' in out
    assert 'Claim check, DDNN nets with BN re-estimated per net' in out
    for net in ('full', 'sub0'):
        log = osp.join(work, 'ddnn_ekd', 'seed0',
                       f'test_recal_{net}_stdout.log')
        with open(log) as f:
            assert f'BatchNorm statistics of {net} recalibrated on 2' in \
                f.read()


def test_a_failed_run_is_reported_after_the_others(tmp_path, capsys,
                                                   monkeypatch):
    root = write_fake_cifar100(str(tmp_path / 'data'), per_class=3)
    work = str(tmp_path / 'work')
    real = reproduce.train_and_test

    def fail_ddnn(args, row, seed):
        if row == 'ddnn':
            raise SystemExit('command failed (1): train.py ...')
        return real(args, row, seed)

    monkeypatch.setattr(reproduce, 'train_and_test', fail_ddnn)
    with pytest.raises(SystemExit, match='1 run\\(s\\) failed'):
        reproduce.main([
            '--data-root', root, '--epochs', '1', '--seeds', '0', '--rows',
            'resnet18', 'ddnn', '--batch-size', '32', '--num-workers', '0',
            '--val-per-class', '1', '--work-dir', work, '--jobs', '2',
            '--cfg-options', *TINY
        ])
    out = capsys.readouterr().out
    assert '[ddnn seed 0] FAILED' in out
    # The run that worked is still in the table.
    with open(osp.join(work, 'results.csv')) as f:
        assert [r['row'] for r in csv.DictReader(f)] == ['resnet18']


def test_bad_arguments(tmp_path):
    root = write_fake_cifar100(str(tmp_path / 'data'), test=False)
    with pytest.raises(SystemExit):
        reproduce.main(['--data-root', root, '--rows', 'resnet99'])
    with pytest.raises(SystemExit):  # no test file for the official pair
        reproduce.main(['--data-root', root, '--split', 'test'])
    with pytest.raises(SystemExit):
        reproduce.main(['--data-root', str(tmp_path / 'nothing')])
    with pytest.raises(SystemExit):
        reproduce.main(['--data-root', root, '--jobs', '0'])


def test_lever_rows_build_the_documented_models(tmp_path):
    from mmekd.registry import MODELS
    root = write_fake_cifar100(str(tmp_path / 'data'), per_class=2)
    args = reproduce.parse_args([
        '--data-root', root, '--work-dir', str(tmp_path / 'work'),
        '--rows', *reproduce.LEVER_ROWS])
    levers = ('sub_ce_weight', 'full_loss_weight', 'train_nets')
    built = {}
    for row, (_, _, nets) in reproduce.LEVER_ROWS.items():
        cfg = Config.fromfile(reproduce.row_config(args, row, 0))
        model = MODELS.build(cfg.model)
        if 'alone' in nets:
            assert list(model.backbone.stage_blocks) == [2, 2, 3, 2]
            continue
        assert model.net_names == list(nets)
        bb = model.backbone
        built[row] = (tuple(getattr(model, k) for k in levers),
                      None if model.kl_loss is None else
                      (model.kl_loss.tau, model.kl_loss.loss_weight),
                      model.at_loss is not None, bb.private_norm,
                      [bb.blocks_per_stage(n) for n in bb.sub_net_names])
    r18 = [[2, 2, 2, 2]]
    assert built == {
        'ekd_sub_kd_only': ((0.0, 1.0, 'all'), (4.0, 1.0), True, 'stats',
                            r18),
        'ekd_sandwich': ((1.0, 1.0, 'sandwich_random'), (4.0, 1.0), True,
                         'stats', r18 + [[2, 3, 4, 2], [3, 3, 5, 3]]),
        'ekd_t1': ((1.0, 1.0, 'all'), (1.0, 1.0), True, 'stats', r18),
        'ekd_private_bn': ((1.0, 1.0, 'all'), (4.0, 1.0), True, True, r18),
        'adaptive_depth': ((0.0, 0.5, 'sandwich'), (1.0, 0.5), False, True,
                           [[2, 2, 3, 2]]),
    }

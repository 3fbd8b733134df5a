# Copyright (c) mmekd contributors. All rights reserved.
"""tools/reproduce_cifar100.py: its rows are the configs of
configs/reproduce_cifar100/, each compared with its nets alone by the
machinery of tools/compare.py; end to end on a tiny fake CIFAR-100."""
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


def argv(root, work, *extra):
    return ['--data-root', root, '--epochs', '1', '--batch-size', '32',
            '--num-workers', '0', '--val-per-class', '1', '--work-dir',
            work, *extra, '--cfg-options', *TINY]


@pytest.fixture(scope='module')
def reproduced(tmp_path_factory):
    """Two rows, one seed, two runs at once, BatchNorm re-estimated: the
    DDNN rows and the two nets alone they share (4 runs)."""
    tmp = tmp_path_factory.mktemp('reproduce')
    root = write_fake_cifar100(str(tmp / 'data'), per_class=3)
    work = str(tmp / 'work')
    capture = pytest.MonkeyPatch()
    lines = []
    capture.setattr('builtins.print',
                    lambda *a, **k: lines.append(' '.join(map(str, a))))
    try:
        reproduce.main(argv(root, work, '--rows', 'ddnn', 'ddnn_ekd',
                            '--seeds', '0', '--jobs', '2',
                            '--recalibrate-bn', '2'))
    finally:
        capture.undo()
    with open(osp.join(work, 'results.csv')) as f:
        rows = list(csv.DictReader(f))
    return work, rows, '\n'.join(lines)


@pytest.mark.slow
def test_rows_against_their_nets_alone(reproduced):
    work, rows, out = reproduced
    assert sorted((r['row'], r['net'], r['arch']) for r in rows) == sorted([
        ('ddnn', 'full', 'resnet34'), ('ddnn', 'sub0', 'resnet18'),
        ('ddnn_ekd', 'full', 'resnet34'), ('ddnn_ekd', 'sub0', 'resnet18'),
        ('alone', 'alone', 'resnet34'), ('alone', 'alone', 'resnet18')])
    assert '4 runs (ddnn, ddnn_ekd and their nets alone)' in out  # shared
    assert all(0 <= float(r['top1']) <= 100 for r in rows)
    assert '**ddnn_ekd**, seeds [0]' in out
    assert '| sub0 | resnet18 | [2,2,2,2] |' in out
    assert 'top-1 DDNN, BN re-estimated' in out
    assert 'Claim check (mean over seeds):' in out
    assert '- ddnn_ekd sub0 (resnet18): DDNN - alone = ' in out
    assert 'Claim check, DDNN nets with BN re-estimated per net' in out
    recal = {(r['row'], r['net']): r['top1_recal'] for r in rows}
    assert recal[('alone', 'alone')] == 'nan'  # a net alone: its own stats
    assert 0 <= float(recal[('ddnn_ekd', 'sub0')]) <= 100
    for row in ('ddnn', 'ddnn_ekd'):
        assert osp.isfile(osp.join(work, f'{row}.png'))


@pytest.mark.slow
def test_runs_train_the_row_configs_on_the_fast_data_path(reproduced):
    work, _, out = reproduced
    assert 'fast data pipeline' in out
    cfg = Config.fromfile(osp.join(work, 'ddnn', 'seed0.py'))
    assert cfg.model.kl_loss is None and cfg.model.at_loss is None
    assert cfg.randomness.seed == 0
    assert cfg.train_dataloader.dataset.type == 'mmekd.InMemoryBatchDataset'
    assert cfg.train_dataloader.dataset.dataset.val_per_class == 1
    assert cfg.data_preprocessor.type == 'mmekd.GPUAugmentPreprocessor'
    assert cfg.val_dataloader.dataset.subset == 'val'
    # The runner's merged config: no CPU augmentation.
    merged = Config.fromfile(osp.join(work, 'ddnn', 'seed0', 'seed0.py'))
    assert 'RandomCrop' not in str(merged.train_dataloader)
    assert merged.train_dataloader.num_workers == 0


def plan(tmp_path, *extra):
    """The comparisons of the arguments, without training."""
    root = write_fake_cifar100(str(tmp_path / 'data'), per_class=3)
    args = reproduce.parse_args(argv(root, str(tmp_path / 'work'), *extra))
    return {c.name: c for c in reproduce.comparisons(args)}


def test_seeds_of_the_claim_and_ablation_rows(tmp_path):
    rows = plan(tmp_path, '--rows', 'ddnn_ekd', 'ddnn', '--seeds', '0', '1',
                '--ablation-seeds', '1')
    assert rows['ddnn_ekd'].seeds == [0, 1] and rows['ddnn'].seeds == [1]
    runs = [r.name for c in rows.values() for r in c.runs()]
    assert 'ddnn/seed1' in runs and 'ddnn/seed0' not in runs


def test_every_row_gets_the_whole_recipe(tmp_path):
    """Each row gets the recipe as given (merging it into one row must not
    use it up), and rows that differ in their losses or BatchNorm sharing
    share their nets alone."""
    rows = plan(tmp_path, '--rows', 'ddnn', 'ddnn_kl', 'ekd_private_bn',
                '--schedule', 'cosine')
    for c in rows.values():
        assert c.cfg.param_scheduler == dict(
            type='CosineAnnealingLR', by_epoch=True, begin=0, end=1, T_max=1)
    assert len({n['alone_dir'] for c in rows.values() for n in c.nets}) == 2


def test_official_test_split_on_the_stock_pipeline(tmp_path):
    cfg = plan(tmp_path, '--rows', 'ddnn_ekd', '--split', 'test',
               '--stock-data', '--seeds', '0')['ddnn_ekd'].cfg
    assert cfg.val_dataloader.dataset.split == 'test'
    train = cfg.train_dataloader
    assert train.dataset.type == 'mmekd.CIFAR100'
    assert train.dataset.subset == 'all'
    assert [t['type'] for t in train.dataset.pipeline] == [
        'RandomCrop', 'RandomFlip', 'PackInputs']
    assert cfg.data_preprocessor.get('type') is None  # ClsDataPreprocessor


def test_lever_rows_build_the_documented_models(tmp_path):
    built = {}
    for row, c in plan(tmp_path, '--rows', 'ekd_sub_kd_only', 'ekd_sandwich',
                       'ekd_t1', 'ekd_private_bn', 'adaptive_depth').items():
        from mmekd.registry import MODELS
        model = MODELS.build(c.cfg.model)
        bb = model.backbone
        ekd = model.ekd
        built[row] = ((ekd.sub_ce_weight, ekd.full_loss_weight,
                       model.sampler.mode),
                      None if ekd.kl_loss is None else
                      (ekd.kl_loss.tau, ekd.kl_loss.loss_weight),
                      ekd.at_loss is not None, bb.norm_sharing,
                      [bb.blocks_per_stage(n) for n in bb.sub_net_names])
    r18 = [[2, 2, 2, 2]]
    assert built == {
        'ekd_sub_kd_only': ((0.0, 1.0, 'all'), (4.0, 1.0), True, 'stats',
                            r18),
        'ekd_sandwich': ((1.0, 1.0, 'sandwich_random'), (4.0, 1.0), True,
                         'stats', r18 + [[2, 3, 4, 2], [3, 3, 5, 3]]),
        'ekd_t1': ((1.0, 1.0, 'all'), (1.0, 1.0), True, 'stats', r18),
        'ekd_private_bn': ((1.0, 1.0, 'all'), (4.0, 1.0), True, 'private',
                           r18),
        'adaptive_depth': ((0.0, 0.5, 'sandwich'), (1.0, 0.5), False,
                           'private', [[2, 2, 3, 2]]),
    }


def test_bad_arguments(tmp_path, capsys):
    root = write_fake_cifar100(str(tmp_path / 'data'), test=False)
    with pytest.raises(SystemExit):
        reproduce.main(['--data-root', root, '--rows', 'resnet99'])
    with pytest.raises(SystemExit):  # now the nets alone of a row
        reproduce.main(['--data-root', root, '--rows', 'resnet18'])
    assert ("resnet18 is no longer a row of its own: it is the net 'sub0' "
            'of ddnn_ekd') in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no test file for the official pair
        reproduce.main(['--data-root', root, '--split', 'test'])
    with pytest.raises(SystemExit):
        reproduce.main(['--data-root', str(tmp_path / 'nothing')])
    with pytest.raises(SystemExit):
        reproduce.main(['--data-root', root, '--jobs', '0'])
    with pytest.raises(SystemExit):
        reproduce.main(['--data-root', root, '--fast-data', '--stock-data'])

# Copyright (c) mmekd contributors. All rights reserved.
"""The comparison machinery (tools/compare.py, tools/reproduce_cifar100.py):
the nets alone, the shared runs, the runner of training subprocesses and
the report, without training a model."""
import json
import os
import os.path as osp
import sys

import pytest
from mmengine.config import Config
from tool_loader import REPO

from mmekd.apis.alone_config import alone_config, alone_configs
from mmekd.apis.comparison import (Comparison, collect_results, plan_runs,
                                   read_run)
from mmekd.apis.comparison_report import (checks, markdown, records,
                                          summarise, write_report)
from mmekd.apis.training_runs import StaleRunError, run_trainings
from mmekd.utils.cli import read_config

DEMO = osp.join(REPO, 'configs', 'ddnn_demo_digits.py')
TINY = {'model.backbone.stem_channels': 4, 'model.backbone.base_channels': 4,
        'model.head.in_channels': 32}


def tiny_demo(**more):
    return read_config(DEMO, dict(TINY, **more))


def test_alone_configs_are_the_recipe_with_a_plain_net():
    cfg = tiny_demo()
    alone = alone_configs(cfg)
    assert list(alone) == ['full', 'sub0', 'sub1']
    assert alone['full'].model.backbone == dict(
        type='ResNet_CIFAR', depth=34, out_indices=(3, ), stem_channels=4,
        base_channels=4)
    assert alone['sub0'].model.backbone.depth == 18
    # ResNet-10 [1,1,1,1] is no MMPretrain depth: mmekd's single-net form.
    assert alone['sub1'].model.backbone.type == 'mmekd.DepthDynamicResNetCIFAR'
    assert list(alone['sub1'].model.backbone.stage_blocks) == [1, 1, 1, 1]
    for c in alone.values():
        assert c.model.type == 'ImageClassifier'
        assert c.model.head.type == 'LinearClsHead'
        assert c.val_evaluator == dict(type='Accuracy', topk=(1, ))
        assert c.model_wrapper_cfg.type == 'MMDistributedDataParallel'
        # The rest of the recipe is the DDNN config's.
        for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                    'train_dataloader', 'val_dataloader', 'data_preprocessor',
                    'default_hooks', 'randomness'):
            assert c[key] == cfg[key], key
        assert c.filename == cfg.filename


@pytest.mark.slow
def test_rows_that_differ_in_losses_share_their_nets_alone(tmp_path):
    ekd = Comparison('ekd', tiny_demo(), [0, 1])
    plain = Comparison('plain', tiny_demo(**{'model.kl_loss': None}), [1])
    wide = Comparison('wide', tiny_demo(**{
        'model.backbone.base_channels': 8, 'model.backbone.stem_channels': 8,
        'model.head.in_channels': 64}), [0])
    assert [n['alone_dir'] for n in ekd.nets] == [n['alone_dir'] for n in plain.nets]
    assert not {n['alone_dir'] for n in ekd.nets} & {n['alone_dir']
                                                  for n in wide.nets}
    assert [n['arch'] for n in ekd.nets] == ['resnet34', 'resnet18',
                                             'resnet10']
    runs = plan_runs([ekd, plain, wide], str(tmp_path))
    names = [r.name for r in runs]
    # ekd: 2 seeds x (DDNN + 3 alone); plain: seed 1, its alone runs are
    # ekd's; wide: 1 x (1 + 3).
    assert len(names) == len(set(names)) == 8 + 1 + 4
    assert 'plain/seed1' in names and 'plain/seed0' not in names
    seeds = {r.name: r.config.randomness.seed for r in runs}
    assert all(seeds[n] == int(n[-1]) for n in names)
    plan = json.load(open(tmp_path / 'plan.json'))
    assert [c['name'] for c in plan['comparisons']] == ['ekd', 'plain',
                                                        'wide']
    with pytest.raises(ValueError, match='names must differ'):
        plan_runs([ekd, ekd], str(tmp_path))


# A fake tools/train.py and tools/test.py: the test writes metrics that
# encode the run (full/sub0 top-1 from the seed, alone from the depth).
FAKE_TRAIN = """
import os, sys
cfg, work = sys.argv[1], sys.argv[3]
if 'FAIL_' + os.path.basename(os.path.dirname(cfg)) in os.environ:
    sys.exit('training diverged')
open(os.path.join(work, 'epoch_1.pth'), 'w').write('weights')
open(os.path.join(work, 'last_checkpoint'), 'w').write(
    os.path.join(work, 'epoch_1.pth'))
"""
FAKE_TEST = """
import json, re, sys
cfg, ckpt = sys.argv[1], sys.argv[2]
out = sys.argv[sys.argv.index('--out') + 1]
text = open(cfg).read()
seed = int(re.search(r'seed=(\\d+)', text).group(1))
if 'ImageClassifier' in text:
    depth = 10 if 'stage_blocks' in text else int(
        re.search(r'depth=(\\d+)', text).group(1))
    metrics = {'accuracy/top1': depth + seed}
else:
    metrics = {f'{n}/top1': 50.0 + 10 * i + seed
               for i, n in enumerate(('full', 'sub0', 'sub1'))}
    if '--recalibrate-bn' in sys.argv:
        net = sys.argv[sys.argv.index('--net') + 1]
        metrics = {f'{net}/top1': 99.0}
json.dump(metrics, open(out, 'w'))
"""


@pytest.fixture
def fake_tools(tmp_path):
    for name, text in (('train.py', FAKE_TRAIN), ('test.py', FAKE_TEST)):
        (tmp_path / name).write_text(text)
    return ([sys.executable, str(tmp_path / 'train.py')],
            [sys.executable, str(tmp_path / 'test.py')])


@pytest.mark.slow
def test_runs_report_and_resume(tmp_path, fake_tools, monkeypatch):
    train, test = fake_tools
    work = str(tmp_path / 'work')
    comparison = Comparison('demo', tiny_demo(), [0, 1])
    runs = plan_runs([comparison], work)
    lines = []
    results = run_trainings(runs, work, train, test, jobs=3,
                            recalibrate_bn=2, log=lines.append)
    assert all(r is not None for r in results.values())
    plan, collected, unfinished = collect_results(work)
    assert unfinished == [] and collected == results
    summary = summarise(plan['comparisons'][0], collected)
    full, sub0, sub1 = summary['nets']
    # DDNN full: 50 + seed; alone ResNet-34: 34 + seed: +16 every seed.
    assert full['ddnn']['top1'] == [50.0, 51.0]
    assert full['alone']['top1'] == [34.0, 35.0]
    assert full['diff']['top1_stats'] == dict(mean=16.0, std=0.0, n=2)
    assert sub1['diff']['top1'] == [70.0 - 10, 71.0 - 11]
    assert sub0['ddnn']['top1_recal_stats']['mean'] == 99.0
    assert full['ddnn']['top5_stats'] is None  # no top-5: a dash
    table = markdown(summary)
    assert ('| full | resnet34 | [3,4,6,3] | 0.08 | 1.190 | 50.50 ± 0.71 | '
            '34.50 ± 0.71 | +16.00 ± 0.00 | 99.00 ± 0.00 |') in table
    assert 'DDNN / sum alone = ' in table
    time = summary['time']
    assert time['ratio'] == pytest.approx(
        (sum(time['ddnn_s']) / 2) / (sum(time['alone_s']) / 2))
    paths = write_report(summary, work)
    assert [osp.basename(p) for p in paths] == ['compare.md', 'compare.json',
                                                'compare.png']
    assert json.load(open(paths[1]))['nets'][0]['net'] == 'full'
    rows = records(plan, collected)
    assert len(rows) == 2 * 3 + 2 * 3  # DDNN nets and nets alone, 2 seeds
    got = checks([summary], full_target=20.0, sub_target=1.0)
    assert [(c['net'], c['delta'], c['met']) for c in got] == [
        ('full', 16.0, False), ('sub0', 42.0, True), ('sub1', 60.0, True)]

    # Resumed: nothing is trained again.
    lines.clear()
    again = run_trainings(runs, work, train, test, skip_existing=True,
                          log=lines.append)
    assert again == results and not any('training' in x for x in lines)
    # A run folder with results of another config is refused, not reused.
    other = plan_runs([Comparison('demo', tiny_demo(**{
        'train_cfg.max_epochs': 3}), [0])], work)
    with pytest.raises(StaleRunError, match='holds the results of another '
                       'config'):
        run_trainings(other[:1], work, train, test, skip_existing=True)


@pytest.mark.slow
def test_a_failed_run_is_reported_after_the_others(tmp_path, fake_tools,
                                                   monkeypatch):
    train, test = fake_tools
    work = str(tmp_path / 'work')
    runs = plan_runs([Comparison('demo', tiny_demo(), [0])], work)
    monkeypatch.setenv('FAIL_demo', '1')
    lines = []
    results = run_trainings(runs, work, train, test, log=lines.append)
    assert results['demo/seed0'] is None
    assert sum(r is not None for r in results.values()) == 3
    assert any(x.startswith('[demo/seed0] FAILED: command failed') and
               'training diverged' in x for x in lines)
    _, _, unfinished = collect_results(work)
    assert unfinished == ['demo/seed0']
    assert read_run(work, 'demo/seed0') is None


def test_alone_config_of_an_image_folder_config(tmp_path, monkeypatch):
    """Any DDNN config: the custom-folder one (ImageNet-style ResNet)."""
    monkeypatch.setenv('NUM_CLASSES', '3')
    cfg = Config.fromfile(osp.join(REPO, 'configs',
                                   'ddnn_r34_custom_folder.py'))
    sub0 = alone_config(cfg, 'sub0')
    assert sub0.model.backbone.type == 'ResNet'
    assert sub0.model.backbone.depth == 18
    assert sub0.model.head.num_classes == 3
    assert sub0.train_dataloader == cfg.train_dataloader
    assert os.path.basename(sub0.filename) == 'ddnn_r34_custom_folder.py'

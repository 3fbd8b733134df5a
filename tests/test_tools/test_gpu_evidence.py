# Copyright (c) mmekd contributors. All rights reserved.
"""tools/gpu_evidence.py: the dry run end to end on the CPU, the data check,
the goal table and the deadline of a phase."""
import json
import os
import os.path as osp
import sys
import tarfile
import time

import pytest
from tool_loader import load_tool

gpu_evidence = load_tool('gpu_evidence')

ROWS = ['adaptive_depth']  # with its nets alone: 3 runs


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    """One dry run (every phase but the compiled benchmark, whose graph
    capture alone takes minutes on 2 cores) of one row and its nets
    alone."""
    tmp = tmp_path_factory.mktemp('dry')
    out = str(tmp / 'out')
    report = gpu_evidence.main([
        '--dry-run', '--out', out, '--rows', *ROWS, '--jobs', '3',
        '--skip', 'bench_cifar_compiled'])
    return out, report


def test_dry_run_report(dry_run):
    out, report = dry_run
    assert sorted(os.listdir(out)) == sorted(gpu_evidence.OUT_FILES)
    with open(osp.join(out, 'evidence.json')) as f:
        saved = json.load(f)
    assert saved['phases'] == report['phases']
    assert {n: p['status'] for n, p in saved['phases'].items()} == {
        'bench_cifar': 'ok', 'bench_224': 'ok', 'bench_epoch': 'ok',
        'claims': 'ok', 'bench_cifar_compiled': 'skipped (--skip)'}
    bench = saved['benchmarks']
    assert set(bench) == {'bench_cifar', 'bench_224', 'bench_epoch'}
    assert bench['bench_cifar']['batch_size'] == 2
    assert bench['bench_224']['input_size'] == 64
    assert bench['bench_224']['channels_last'] is True
    for name in ('bench_cifar', 'bench_224'):
        rows = bench[name]['rows']
        assert set(rows) == {'ddnn[memory_efficient]', 'ddnn[simple]',
                             'full alone', 'sub0 alone'}
        assert all(r['img_per_s'] > 0 for r in rows.values())
    assert bench['bench_epoch']['iterations'] == 7
    # Part (c): every planned run finished (the row and its 2 nets alone),
    # one record per net.
    claims = saved['claims']
    assert claims['planned'] == claims['finished'] == 3
    assert claims['unfinished'] == []
    assert sorted((r['row'], r['net'], r['arch'])
                  for r in claims['records']) == sorted(
        [('adaptive_depth', 'full', 'resnet34'),
         ('adaptive_depth', 'sub0', 'resnet20'),
         ('alone', 'alone', 'resnet34'), ('alone', 'alone', 'resnet20')])
    top1 = {(r['row'], r['arch']): r['top1'] for r in claims['records']}
    # The goal table: every net against itself alone.
    goal = {(g['row'], g['net']): g for g in claims['goal']}
    assert set(goal) == {('adaptive_depth', 'full'),
                         ('adaptive_depth', 'sub0')}
    g = goal[('adaptive_depth', 'sub0')]
    assert g['arch'] == 'resnet20' and g['target'] == 1.0
    assert g['delta'] == pytest.approx(
        top1[('adaptive_depth', 'resnet20')] - top1[('alone', 'resnet20')],
        abs=0.01)
    assert goal[('adaptive_depth', 'full')]['target'] == 0.0
    with open(osp.join(out, 'evidence.md')) as f:
        md = f.read()
    for text in ('## (a)', '## (b)', '## (c)', 'DRY RUN',
                 '| sub0 | resnet20 | [2,2,3,2] |',
                 '| adaptive_depth | sub0 | resnet20 |',
                 '--dry-run'):
        assert text in md, text
    with tarfile.open(osp.join(out, 'logs.tar.gz')) as tar:
        names = tar.getnames()
    assert 'bench_cifar.log' in names and 'claims.log' in names
    assert 'claims_1e/adaptive_depth/seed0/train_stdout.log' in names
    assert not any(n.endswith('.pth') for n in names)


def test_dry_run_trains_the_row_configs(dry_run):
    out, report = dry_run
    work = osp.join(osp.dirname(out), 'gpu_evidence_work', 'claims_1e')
    with open(osp.join(work, 'adaptive_depth', 'seed0.py')) as f:
        text = f.read()
    assert "train_nets='sandwich'" in text
    assert 'sub_ce_weight=0.0' in text


def _fake(root, per_class=3, meta=True):
    gpu_evidence.write_fake_cifar100(str(root), per_class)
    folder = osp.join(str(root), 'cifar-100-python')
    if not meta:
        os.remove(osp.join(folder, 'meta'))
    return str(root), folder


def test_check_data(tmp_path):
    root, folder = _fake(tmp_path / 'ok')
    assert gpu_evidence.check_data(root, val_per_class=1) == []
    # 3 images per class cannot hold out 50.
    problems = gpu_evidence.check_data(root)
    assert len(problems) == 1
    assert 'classes [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]... have <= 50' in \
        problems[0]
    assert gpu_evidence.check_data(str(tmp_path / 'none')) == [
        f"folder {tmp_path / 'none' / 'cifar-100-python'} is missing "
        "(the data root must hold 'cifar-100-python/' with the files "
        "'train' and 'meta')"]
    root, folder = _fake(tmp_path / 'nometa', meta=False)
    assert gpu_evidence.check_data(root, 1) == [
        f"file {osp.join(folder, 'meta')} is missing"]
    with open(osp.join(folder, 'train'), 'wb') as f:
        f.write(b'not a pickle')
    with open(osp.join(folder, 'meta'), 'wb') as f:
        f.write(b'')
    assert 'is not a valid CIFAR pickle batch' in gpu_evidence.check_data(
        root, 1)[0]


def test_missing_data_stops_with_a_report(tmp_path):
    out = str(tmp_path / 'out')
    with pytest.raises(SystemExit, match='cifar-100-python is missing'):
        gpu_evidence.main(['--data-root', str(tmp_path / 'none'), '--out',
                           out, '--work-dir', str(tmp_path / 'work')])
    with open(osp.join(out, 'evidence.md')) as f:
        md = f.read()
    assert '## Data problems (nothing was run)' in md
    assert 'cifar-100-python is missing' in md


def test_goal_check():
    """Every net against itself alone: the sub-net's goal is +1.0, the full
    net's 0 (the mean of the differences paired by seed)."""
    def net(name, ddnn, alone):
        from mmekd.apis.comparison_report import mean_std
        return dict(net=name, arch=f'arch_{name}',
                    ddnn=dict(top1=ddnn, top1_recal=[None] * len(ddnn)),
                    alone=dict(top1=alone, top1_stats=mean_std(alone)))

    summaries = [dict(name='ddnn_ekd', nets=[
        net('full', [72.5, 72.0], [72.0, 72.0]),
        net('sub0', [71.4, None], [70.0, 71.0]),
        net('sub1', [60.0], [None])])]
    goal = gpu_evidence.goal_check(summaries)
    assert [(g['row'], g['net'], g['delta'], g['met'], g['seeds'],
             g['alone_seeds']) for g in goal] == [
                 ('ddnn_ekd', 'full', 0.25, True, 2, 2),
                 ('ddnn_ekd', 'sub0', 1.4, True, 1, 2)]


def test_phase_deadline_stops_the_process_group(tmp_path):
    # The phase starts a child that would outlive it: both are stopped.
    code = ('import subprocess, sys, time; '
            'p = subprocess.Popen([sys.executable, "-c", '
            '"import time; time.sleep(60)"]); '
            'print(p.pid, flush=True); time.sleep(60)')
    start = time.monotonic()
    result = gpu_evidence.run_phase([sys.executable, '-c', code],
                                    str(tmp_path / 'p.log'), timeout=3)
    assert time.monotonic() - start < 30
    assert result['status'] == 'stopped at its deadline (3 s)'
    with open(tmp_path / 'p.log') as f:
        child = int(f.read().split()[0])
    time.sleep(0.5)
    try:
        with open(f'/proc/{child}/stat') as f:
            assert f.read().split()[2] == 'Z'  # killed, not yet reaped
    except FileNotFoundError:
        pass
    failed = gpu_evidence.run_phase(
        [sys.executable, '-c', 'import sys; print("boom"); sys.exit(3)'],
        str(tmp_path / 'f.log'), timeout=30)
    assert failed['status'] == 'failed (exit 3)'
    assert 'boom' in failed['log_tail']
    assert gpu_evidence.run_phase(['true'], str(tmp_path / 's.log'),
                                  timeout=0)['status'].startswith('skipped')

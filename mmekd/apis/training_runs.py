# Copyright (c) mmekd contributors. All rights reserved.
"""Train and test runs as subprocesses, several at once, resumable.

Each run (:class:`mmekd.apis.comparison.TrainingRun`) gets
``<work_dir>/<name>.py`` (its config) and the folder ``<work_dir>/<name>/``
(its work dir): the training command on the config, then the test command
on its last checkpoint, which writes ``metrics.json``; ``timing.json``
holds the training wall time. A run whose ``metrics.json`` exists is
reused with ``skip_existing`` (only if its config is the one asked for);
a failed run is reported with its log's tail and the others go on.

Example::

    done = run_comparisons([Comparison('demo', cfg, [0, 1])],
                           'work_dirs/compare', tools_dir='tools', jobs=2)
    print(done.summaries[0]['nets'][0]['diff']['top1_stats'])
"""
import json
import os
import os.path as osp
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
import sys
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from mmekd.utils.refusal import RefusalError

from .comparison import (Comparison, TrainingRun, collect_results, plan_runs,
                         read_run)
from .comparison_report import summarise


class RunFailedError(RuntimeError):
    """A training or test command of a run failed."""


class StaleRunError(RefusalError, ValueError):
    """A run's folder holds results of another config."""


def _run(cmd: List[str], log_path: str, cwd: Optional[str]) -> None:
    with open(log_path, 'w') as log:
        proc = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    if proc.returncode != 0:
        with open(log_path, errors='replace') as f:
            tail = ''.join(f.readlines()[-30:])
        raise RunFailedError(f'command failed ({proc.returncode}): '
                             f'{" ".join(cmd)}\n--- {log_path} ---\n{tail}')


def last_checkpoint(work_dir: str) -> str:
    """The checkpoint MMEngine's ``CheckpointHook`` saved last in
    ``work_dir`` (its ``last_checkpoint`` file)."""
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        raise RunFailedError(f'{work_dir} has no last_checkpoint: the '
                             'training saved no checkpoint')
    with open(path) as f:
        return f.read().strip()


class _Trainer:
    """Trains and tests one run (see the module docstring)."""

    def __init__(self, work_dir, train_cmd, test_cmd, skip_existing,
                 recalibrate_bn, cwd, log):
        self.work_dir, self.cwd, self.log = work_dir, cwd, log
        self.train_cmd, self.test_cmd = list(train_cmd), list(test_cmd)
        self.skip_existing = skip_existing
        self.recalibrate_bn = recalibrate_bn

    def __call__(self, run: TrainingRun) -> Optional[dict]:
        try:
            return self.train_and_test(run)
        except RunFailedError as e:
            self.log(f'[{run.name}] FAILED: {e}')
            return None

    def train_and_test(self, run: TrainingRun) -> dict:
        config = osp.join(self.work_dir, f'{run.name}.py')
        folder = osp.join(self.work_dir, run.name)
        text = run.config.pretty_text
        if self.skip_existing and osp.isfile(
                osp.join(folder, 'metrics.json')):
            saved = None
            if osp.isfile(config):
                with open(config) as f:
                    saved = f.read()
            if saved != text:
                raise StaleRunError(
                    f'{folder} holds the results of another config than '
                    f'the one asked for now ({config} differs or is '
                    'missing): give another work dir, or move it away to '
                    'train it again')
            self.recalibrated(run, config, folder)
            return read_run(self.work_dir, run.name)
        os.makedirs(folder, exist_ok=True)
        with open(config, 'w') as f:
            f.write(text)
        self.log(f'[{run.name}] training...')
        start = time.perf_counter()
        _run(self.train_cmd + [config, '--work-dir', folder],
             osp.join(folder, 'train_stdout.log'), self.cwd)
        train_s = round(time.perf_counter() - start, 1)
        self.test(config, folder, 'metrics.json', 'test_stdout.log')
        self.recalibrated(run, config, folder)
        with open(osp.join(folder, 'timing.json'), 'w') as f:
            json.dump(dict(train_s=train_s), f)
        self.log(f'[{run.name}] done in {train_s:.0f} s')
        return read_run(self.work_dir, run.name)

    def test(self, config: str, folder: str, out: str, log: str,
             extra: Sequence[str] = ()) -> None:
        _run(self.test_cmd + [
            config, last_checkpoint(folder), '--work-dir', folder, '--out',
            osp.join(folder, out), '--out-item', 'metrics', *extra
        ], osp.join(folder, log), self.cwd)

    def recalibrated(self, run: TrainingRun, config: str,
                     folder: str) -> None:
        """Test every net of a DDNN run with its BatchNorm statistics
        re-estimated on ``recalibrate_bn`` training batches."""
        if not self.recalibrate_bn or run.kind != 'ddnn':
            return
        with open(osp.join(folder, 'metrics.json')) as f:
            nets = sorted({k.split('/')[0] for k in json.load(f)
                           if k.count('/') == 1})
        for net in nets:
            out = f'metrics_recal_{net}.json'
            if self.skip_existing and osp.isfile(osp.join(folder, out)):
                continue
            self.test(config, folder, out, f'test_recal_{net}_stdout.log',
                      ['--net', net, '--recalibrate-bn',
                       str(self.recalibrate_bn)])


def run_trainings(runs: Sequence[TrainingRun],
                  work_dir: str,
                  train_cmd: Sequence[str],
                  test_cmd: Sequence[str],
                  jobs: int = 1,
                  skip_existing: bool = False,
                  recalibrate_bn: int = 0,
                  cwd: Optional[str] = None,
                  log: Callable[[str], None] = print
                  ) -> Dict[str, Optional[dict]]:
    """Train and test every run, ``jobs`` at once.

    Args:
        runs (list[TrainingRun]): What to run.
        work_dir (str): Where (see the module docstring).
        train_cmd (list[str]): The training command before
            ``CONFIG --work-dir DIR`` (e.g. ``[python, 'tools/train.py',
            '--amp']``).
        test_cmd (list[str]): The test command before ``CONFIG CKPT
            --work-dir DIR --out FILE --out-item metrics``.
        jobs (int): Runs at once. Defaults to 1.
        skip_existing (bool): Reuse a run whose ``metrics.json`` exists.
        recalibrate_bn (int): Also test every net of each DDNN run with its
            BatchNorm statistics re-estimated on this many training batches
            (``metrics_recal_<net>.json``). Defaults to 0 (no).
        cwd (str, optional): Working directory of the commands.
        log (callable): Receives one line per run start, end and failure.

    Returns:
        dict: Run name -> :func:`read_run` of it, or None if it failed.

    Raises:
        StaleRunError: With ``skip_existing``, a run's folder holds the
            results of another config.
    """
    if jobs < 1:
        raise ValueError(f'jobs must be >= 1, got {jobs}')
    trainer = _Trainer(work_dir, train_cmd, test_cmd, skip_existing,
                       recalibrate_bn, cwd, log)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(trainer, runs))
    return {run.name: result for run, result in zip(runs, results)}


class ComparisonResults(NamedTuple):
    """What :func:`run_comparisons` gives: the ``plan`` (``plan.json``),
    ``results`` (run name -> :func:`read_run`), the ``unfinished`` run names
    and one :func:`summarise` per comparison (``summaries``)."""
    plan: dict
    results: Dict[str, dict]
    unfinished: List[str]
    summaries: List[dict]


def run_comparisons(comparisons: Sequence[Comparison],
                    work_dir: str,
                    tools_dir: str,
                    amp: bool = False,
                    jobs: int = 1,
                    skip_existing: bool = False,
                    recalibrate_bn: int = 0,
                    log: Callable[[str], None] = print
                    ) -> ComparisonResults:
    """Plan the runs of ``comparisons`` (:func:`plan_runs`), train and test
    them with ``<tools_dir>/train.py`` and ``test.py`` in this interpreter
    (:func:`run_trainings`; ``amp`` adds ``--amp`` to training), and read
    back what they left, finished or not.

    Raises:
        StaleRunError: See :func:`run_trainings`.
    """
    runs = plan_runs(comparisons, work_dir)
    log(f'{len(runs)} runs ({", ".join(c.name for c in comparisons)} and '
        f'their nets alone) in {work_dir}')
    train = [sys.executable, osp.join(tools_dir, 'train.py')]
    run_trainings(runs, work_dir, train + (['--amp'] if amp else []),
                  [sys.executable, osp.join(tools_dir, 'test.py')],
                  jobs=jobs, skip_existing=skip_existing,
                  recalibrate_bn=recalibrate_bn, log=log)
    plan, results, unfinished = collect_results(work_dir)
    return ComparisonResults(plan, results, unfinished,
                             [summarise(c, results)
                              for c in plan['comparisons']])

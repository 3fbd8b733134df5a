# Copyright (c) mmekd contributors. All rights reserved.
"""``@pytest.mark.isolated``: run a test in a child interpreter, so that a
crash (a signal from compiled code or a native kernel) fails that test
instead of ending the whole run.

The isolated tests of one module run together in one child (one import of
torch and MMPretrain, not one per test). The child reports each test as it
starts and ends; if it dies, the test it was running fails with the signal's
name and the output's tail, and the module's remaining tests run in a new
child. Outcomes (pass, fail, skip, xfail) are the child's.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Dict, List

import pytest

MARK = 'isolated'
CHILD_ENV = 'MMEKD_ISOLATED_REPORT'  # set in a child: its report file


def pytest_configure(config):
    config.addinivalue_line(
        'markers', f'{MARK}: run in a child interpreter (a crash fails the '
        'test, not the run)')
    report = os.environ.get(CHILD_ENV)
    if report:
        config.pluginmanager.register(_ChildReporter(report), 'isolated-child')


class _ChildReporter:
    """In the child: one JSON line per test start and per outcome."""

    def __init__(self, path: str):
        self.path = path

    def _write(self, **record):
        with open(self.path, 'a') as f:
            f.write(json.dumps(record) + '\n')
            f.flush()
            os.fsync(f.fileno())

    def pytest_runtest_logstart(self, nodeid, location):
        self._write(nodeid=nodeid, event='start')

    def pytest_runtest_logreport(self, report):
        if report.when == 'call' or (report.when == 'setup'
                                     and not report.passed):
            outcome = report.outcome
            if hasattr(report, 'wasxfail'):
                outcome = 'xfailed' if report.skipped else 'xpassed'
            text = report.longreprtext
            if report.skipped and isinstance(report.longrepr, tuple):
                text = report.longrepr[2]
            self._write(
                nodeid=report.nodeid, event='end', outcome=outcome,
                text=text, wasxfail=getattr(report, 'wasxfail', ''))


class _Runner:
    """In the parent: runs a module's isolated tests in children and keeps
    their outcomes."""

    def __init__(self, config):
        self.config = config
        self.pending: Dict[str, List[str]] = {}  # module path -> node ids
        self.results: Dict[str, dict] = {}

    def result(self, item) -> dict:
        if item.nodeid not in self.results:
            self._run_module(item.fspath.strpath)
        return self.results[item.nodeid]

    def _run_module(self, module: str) -> None:
        todo = [n for n in self.pending[module] if n not in self.results]
        while todo:
            self._run_child(todo)
            todo = [n for n in todo if n not in self.results]

    def _run_child(self, nodeids: List[str]) -> None:
        fd, report = tempfile.mkstemp(suffix='.jsonl')
        os.close(fd)
        env = dict(os.environ, **{CHILD_ENV: report})
        try:
            proc = subprocess.run(
                [sys.executable, '-m', 'pytest', '-q', '-p',
                 'no:cacheprovider', '--rootdir', str(self.config.rootpath),
                 *nodeids],
                cwd=str(self.config.rootpath), env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            with open(report) as f:
                records = [json.loads(line) for line in f if line.strip()]
        finally:
            os.remove(report)
        running = None
        for r in records:
            if r['event'] == 'start':
                running = r['nodeid']
            else:
                self.results[r['nodeid']] = r
                running = None
        tail = proc.stdout[-3000:]
        if running is not None:  # the child died inside this test
            rc = proc.returncode
            how = (f'killed by {signal.Signals(-rc).name}' if rc < 0 else
                   f'exited with status {rc}')
            self.results[running] = dict(
                outcome='crashed',
                text=f'the child interpreter {how} during this test; its '
                f'output ended with:\n{tail}')
            return  # the rest run in a new child
        for n in nodeids:  # never started (collection error, crash before)
            self.results.setdefault(
                n, dict(outcome='failed',
                        text='the child interpreter did not run this test '
                        f'(exit status {proc.returncode}); its output ended '
                        f'with:\n{tail}'))


def pytest_collection_modifyitems(config, items):
    if os.environ.get(CHILD_ENV):
        return  # in a child: run here
    runner = _Runner(config)
    for item in items:
        if item.get_closest_marker(MARK) is None:
            continue
        runner.pending.setdefault(item.fspath.strpath, []).append(item.nodeid)
        item.runtest = _isolated_runtest(runner, item)


def _isolated_runtest(runner: _Runner, item):

    def runtest():
        r = runner.result(item)
        outcome, text = r['outcome'], r.get('text', '')
        if outcome in ('passed', 'xpassed'):  # xpassed: not strict
            return
        if outcome == 'skipped':
            pytest.skip(text or 'skipped in the child')
        if outcome == 'xfailed':
            pytest.xfail(r.get('wasxfail') or text)
        pytest.fail(f'[isolated: {outcome}] {text}', pytrace=False)

    return runtest

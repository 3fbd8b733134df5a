# Copyright (c) mmekd contributors. All rights reserved.
"""A DDNN config against each of its nets trained alone with the same
recipe: the training runs that compare them, and their results.

:class:`Comparison` plans the runs of one DDNN config (the DDNN and every
net alone, :func:`alone_config`, once per seed). A net alone is named by
its architecture and a digest of its whole config, so comparisons that
share it (e.g. DDNN rows that differ only in their losses) share its runs.
:func:`plan_runs` merges the runs of several comparisons and writes
``plan.json``; :func:`collect_results` reads what the runs left in the work
dir (:mod:`mmekd.apis.training_runs` trains them), finished or not.

Example::

    comparison = Comparison('ddnn_demo_digits', cfg, seeds=[0, 1])
    runs = plan_runs([comparison], 'work_dirs/compare')
    run_trainings(runs, 'work_dirs/compare', train_cmd, test_cmd)
    results, unfinished = collect_results('work_dirs/compare')
"""
import hashlib
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from mmengine.config import Config

from .alone_config import alone_config
from .costs import net_costs
from .export import build_model, load_config

PLAN_FILE = 'plan.json'


class TrainingRun(NamedTuple):
    """One training run of a comparison.

    Args:
        name (str): Its folder under the work dir, e.g. ``'ddnn_ekd/seed0'``
            or ``'alone/resnet18-1a2b3c4d/seed0'``.
        kind (str): ``'ddnn'`` or ``'alone'``.
        seed (int): ``randomness.seed`` of its config.
        config (Config): Its whole config.
    """
    name: str
    kind: str
    seed: int
    config: Config


def _digest(cfg: Config) -> str:
    return hashlib.sha1(cfg.pretty_text.encode()).hexdigest()[:8]


def _with_seed(cfg: Config, seed: int) -> Config:
    cfg = Config(cfg.to_dict(), filename=cfg.filename)
    cfg.merge_from_dict({'randomness.seed': seed})
    return cfg


class Comparison:
    """A DDNN config against each of its nets trained alone.

    Args:
        name (str): The DDNN runs' folder under the work dir (e.g. the
            config's stem or a row name).
        config (str | Config): The DDNN config, overrides merged.
        seeds (list[int]): Seeds of every run.

    Attributes:
        nets (list[dict]): Per net: ``net``, ``arch``, ``blocks``,
            ``params``, ``flops``, ``input_size`` (:func:`net_costs`) and
            ``alone_dir`` (the folder of its runs alone).
    """

    def __init__(self, name: str, config, seeds: Sequence[int]):
        if not seeds:
            raise ValueError(f'{name}: no seeds to run')
        self.name, self.seeds = name, [int(s) for s in seeds]
        self.cfg = load_config(config)
        model = build_model(self.cfg)
        self.alone = OrderedDict()
        self.nets = []
        for row in net_costs(self.cfg, model):
            net = row['net']
            cfg = alone_config(self.cfg, net, model)
            folder = f"alone/{row['arch']}-{_digest(cfg)}"
            self.alone[folder] = cfg
            self.nets.append(dict(
                net=net, arch=row['arch'], blocks=list(row['blocks']),
                params=row['params'], flops=row['flops'],
                input_size=list(row['input_size']), alone_dir=folder))

    def runs(self) -> List[TrainingRun]:
        """The DDNN and every net alone, once per seed."""
        runs = [TrainingRun(f'{self.name}/seed{s}', 'ddnn', s,
                            _with_seed(self.cfg, s)) for s in self.seeds]
        for folder, cfg in self.alone.items():
            runs += [TrainingRun(f'{folder}/seed{s}', 'alone', s,
                                 _with_seed(cfg, s)) for s in self.seeds]
        return runs

    def to_dict(self) -> dict:
        return dict(name=self.name, config=self.cfg.filename,
                    seeds=self.seeds, nets=self.nets)


def plan_runs(comparisons: Sequence[Comparison],
              work_dir: str) -> List[TrainingRun]:
    """The runs of ``comparisons`` (a run they share, once), in order;
    writes ``<work_dir>/plan.json`` (the comparisons and the runs' names),
    which :func:`collect_results` reads.

    Raises:
        ValueError: Two comparisons have the same name.
    """
    names = [c.name for c in comparisons]
    if len(set(names)) != len(names):
        raise ValueError(f'comparison names must differ, got {names}')
    runs = OrderedDict()
    for c in comparisons:
        for run in c.runs():
            runs.setdefault(run.name, run)
    os.makedirs(work_dir, exist_ok=True)
    plan = dict(comparisons=[c.to_dict() for c in comparisons],
                runs=[dict(name=r.name, kind=r.kind, seed=r.seed)
                      for r in runs.values()])
    with open(osp.join(work_dir, PLAN_FILE), 'w') as f:
        json.dump(plan, f, indent=1)
    return list(runs.values())


def read_run(work_dir: str, name: str) -> Optional[dict]:
    """What a finished run left: ``metrics`` (of ``tools/test.py``),
    ``train_s`` (training wall time) and ``recal`` (``{net: metrics}`` of
    the nets tested with re-estimated BatchNorm statistics); None if it has
    no metrics (not run, failed or stopped)."""
    folder = osp.join(work_dir, name)
    metrics = _read_json(osp.join(folder, 'metrics.json'))
    if metrics is None:
        return None
    timing = _read_json(osp.join(folder, 'timing.json')) or {}
    recal = {}
    for file in sorted(os.listdir(folder)):
        if file.startswith('metrics_recal_') and file.endswith('.json'):
            net = file[len('metrics_recal_'):-len('.json')]
            recal[net] = _read_json(osp.join(folder, file))
    return dict(metrics=metrics, train_s=timing.get('train_s'), recal=recal)


def collect_results(work_dir: str) -> Tuple[dict, Dict[str, dict], List[str]]:
    """The plan of ``work_dir`` and what its runs left.

    Returns:
        tuple: ``(plan, {run name: read_run(...)}, [unfinished run names])``.

    Raises:
        FileNotFoundError: ``work_dir`` has no ``plan.json``.
    """
    path = osp.join(work_dir, PLAN_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} does not exist: {work_dir} holds no '
                                'planned comparison')
    plan = _read_json(path)
    results, unfinished = {}, []
    for run in plan['runs']:
        result = read_run(work_dir, run['name'])
        if result is None:
            unfinished.append(run['name'])
        else:
            results[run['name']] = result
    return plan, results, unfinished


def _read_json(path: str) -> Optional[dict]:
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)

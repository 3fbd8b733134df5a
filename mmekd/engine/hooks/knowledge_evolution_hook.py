# Copyright (c) mmekd contributors. All rights reserved.
"""Knowledge Evolution (Taha et al., CVPR 2021) as an MMEngine hook."""
import copy
import json
import math
import os.path as osp
from typing import Dict, List, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.evaluator import Evaluator
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict
from mmengine.runner import BaseLoop, EpochBasedTrainLoop
from mmpretrain.evaluation import Accuracy

from mmekd.models.ke import (SPLIT_MODES, KESplit, check_ke_support,
                             check_slim_support, check_split_rate,
                             check_weight_init, extract_slim,
                             reset_hypothesis_)
from mmekd.models.plain_net import build_plain, plain_net
from mmekd.registry import HOOKS
from mmekd.utils.atomic_save import atomic_write, fsync_and_replace
from mmekd.utils.flops import complexity
from mmekd.utils.numbers import config_int
from mmekd.vocabulary import is_ddnn, unwrap_model

STATE_KEY = 'knowledge_evolution'


@HOOKS.register_module()
class KnowledgeEvolutionHook(Hook):
    """Train any model for several generations with Knowledge Evolution.

    A split (:class:`mmekd.models.ke.KESplit`) divides every convolution
    and linear weight into a fit hypothesis, kept, and a reset hypothesis,
    re-drawn at the start of every generation after the first. The split is
    drawn once (from ``seed``) and stored in checkpoints under
    ``'knowledge_evolution'`` together with the current generation and the
    per-generation results, so a resumed run continues exactly. A DDNN
    (:class:`mmekd.DDNNClassifier`) gets one split of the weights its nets
    share; every net is evaluated, and has its own slim network.

    Generation ``g`` (1-based) covers epochs ``[(g-1)*E, g*E)`` with
    ``E = epochs_per_generation``. The hook is the one place that sets the
    generations: with ``train_cfg = dict(type=
    'mmekd.KnowledgeEvolutionTrainLoop')`` the run length ``G*E`` follows from
    it, and ``generation_schedule`` (the schedulers of one generation) is
    repeated for every generation. A config that says otherwise elsewhere
    (``train_cfg.max_epochs``, a ``param_scheduler`` next to
    ``generation_schedule``, top-level ``ke_*`` shorthand fields, which
    nothing reads) is refused with the fields named. At each generation
    boundary the hook:

    1. evaluates the dense network and, for KELS, the slim network (the
       extracted fit hypothesis; one per net of a DDNN) on the ``eval_split``
       set, logs both (``ke/dense/<metric>``, ``ke/slim/<metric>``) and saves
       ``generation_<g>.pth`` in the work dir atomically (also after the last
       one);
    2. re-draws the reset hypothesis (``reinit_cfg``; BN, with every net's
       running statistics, and biases carry over unless ``reset_norm`` /
       ``reset_bias``) and clears the optimizer state (momentum buffers);
    3. with ``restart_schedule``, sets every scheduled optimizer value
       (``lr``, ``momentum``...) back to its ``initial_*`` value right before
       the schedulers' first step of the new generation (MMEngine schedulers
       are chainable: each step scales the current value).

    At the end of the run it logs and saves (``ke_results.md`` and
    ``ke_results.json`` in the work dir) one table: dense and slim top-1 of
    every net per generation, with parameters and FLOPs.

    Args:
        num_generations (int): Number of generations ``G``.
        epochs_per_generation (int): Epochs per generation ``E``.
        generation_schedule (list[dict], optional): The parameter schedulers
            of one generation, ``begin``/``end`` counted from its start
            (epochs if ``by_epoch``, the default, else iterations; a missing
            ``end`` is the end of the generation). The hook builds them for
            every generation; the config's ``param_scheduler`` must then be
            empty. None (default): the config's ``param_scheduler`` lists
            every generation's schedulers itself, which must be the same in
            every generation and not span a boundary.
        split_mode (str): ``'kels'`` (kernel-level, convolution-aware:
            first ``ceil(s*C_out)`` filters x first ``ceil(s*C_in)`` input
            channels; stem keeps all image channels; classifiers keep all
            classes) or ``'wels'`` (each weight kept with probability ``s``).
            Defaults to ``'kels'``.
        split_rate (float): ``s`` in ``(0, 1]``. Defaults to 0.5.
        seed (int, optional): Seed of the split and of the re-draws
            (generation ``g`` draws from ``seed + 1000003 * g``). Defaults to
            the runner's seed.
        reinit_cfg (dict): Re-initialiser of reset weights, a
            ``torch.nn.init`` function name and its arguments. Defaults to
            PyTorch's layer default ``kaiming_uniform`` with ``a=sqrt(5)``.
        reset_bias (bool): Re-draw the reset part of biases too. Defaults
            to False.
        reset_norm (bool): Reset norm channels beyond ``ceil(s*C)`` (KELS
            only). Defaults to False.
        restart_schedule (bool): Restart scheduled optimizer values every
            generation (see above). Defaults to True.
        evaluate_slim (bool, optional): Evaluate the slim network(s) at the
            end of every generation. None (default): if KELS and the model
            has a slim form (a plain ResNet classifier or a DDNN; else a
            warning); True: required.
        eval_split (str): Which set the generations are evaluated on:
            ``'val'`` (default; ``val_dataloader`` + ``val_evaluator``) or
            ``'test'`` (``test_dataloader`` + ``test_evaluator``, what the
            official code reports).
        save_generation_ckpt (bool): Save ``generation_<g>.pth``. Defaults to
            True.
    """

    priority = 'NORMAL'  # before ParamSchedulerHook (LOW): see step 3.
    EVAL_SPLITS = ('val', 'test')

    def __init__(self,
                 num_generations: int,
                 epochs_per_generation: int,
                 generation_schedule: Optional[List[dict]] = None,
                 split_mode: str = 'kels',
                 split_rate: float = 0.5,
                 seed: Optional[int] = None,
                 reinit_cfg: dict = dict(
                     type='kaiming_uniform', a=math.sqrt(5)),
                 reset_bias: bool = False,
                 reset_norm: bool = False,
                 restart_schedule: bool = True,
                 evaluate_slim: Optional[bool] = None,
                 eval_split: str = 'val',
                 save_generation_ckpt: bool = True):
        config_int(num_generations, 'num_generations', minimum=1)
        config_int(epochs_per_generation, 'epochs_per_generation', minimum=1)
        if split_mode not in SPLIT_MODES:
            raise ValueError(f'split_mode must be one of {SPLIT_MODES}, got '
                             f'{split_mode!r}')
        if split_mode != 'kels' and (reset_norm or evaluate_slim):
            raise ValueError(
                "reset_norm and evaluate_slim need split_mode='kels' (WELS "
                'gives a sparse, not a slim, fit hypothesis)')
        if eval_split not in self.EVAL_SPLITS:
            raise ValueError(f'eval_split must be one of {self.EVAL_SPLITS}, '
                             f'got {eval_split!r}')
        if generation_schedule is not None and not restart_schedule:
            raise ValueError(
                'generation_schedule repeats one schedule per generation, '
                'which needs restart_schedule=True')
        self.num_generations = num_generations
        self.epochs_per_generation = epochs_per_generation
        self.generation_schedule = _check_generation_schedule(
            generation_schedule, epochs_per_generation)
        self.split_mode = split_mode
        self.split_rate = check_split_rate(split_rate)
        self.seed = seed
        self.reinit_cfg = check_weight_init(reinit_cfg)
        self.reset_bias = reset_bias
        self.reset_norm = reset_norm
        self.restart_schedule = restart_schedule
        self.evaluate_slim = evaluate_slim
        self.eval_split = eval_split
        self.save_generation_ckpt = save_generation_ckpt

        self.split: Optional[KESplit] = None
        self.generation = 1
        self.history: List[Dict[str, float]] = []
        self.costs: Dict[str, Dict[str, int]] = {}
        self._slim = False
        self._scheduled = False

    # ------------------------------------------------------------------ #
    # set-up, state
    # ------------------------------------------------------------------ #
    @staticmethod
    def _model(runner):
        return unwrap_model(runner.model)

    def config_fields(self, runner) -> Dict[str, str]:
        """Config paths of this hook's arguments, e.g.
        ``{'num_generations': 'custom_hooks.0.num_generations', ...}``, for
        error messages."""
        index = 'N'
        for i, h in enumerate((runner.cfg or {}).get('custom_hooks') or []):
            if str(h.get('type', '')).endswith(type(self).__name__):
                index = i
                break
        return {
            name: f'custom_hooks.{index}.{name}'
            for name in ('num_generations', 'epochs_per_generation',
                         'generation_schedule')
        }

    def before_run(self, runner) -> None:
        """Check the config and build the per-generation schedulers (before
        a resumed run loads their state). Training only: ``runner.test()``
        with a KE config runs no generations."""
        if not isinstance(runner._train_loop, BaseLoop) or self._scheduled:
            return
        self._scheduled = True
        check_ke_support(self._model(runner))
        fields = self.config_fields(runner)
        shorthand = sorted(k for k in (runner.cfg or {})
                           if str(k).startswith('ke_'))
        if shorthand:
            raise ValueError(
                f'config fields {shorthand} are not read by anything: '
                'Knowledge Evolution is set by the hook alone '
                f"({fields['num_generations']}, "
                f"{fields['epochs_per_generation']}, "
                f"{fields['generation_schedule']}); the run length and every "
                "generation's schedule follow from it. Set those (e.g. "
                f"--cfg-options {fields['num_generations']}=2) and remove "
                f'{shorthand}')
        loop, E = runner.train_loop, self.epochs_per_generation
        if not isinstance(loop, EpochBasedTrainLoop):
            raise TypeError('KnowledgeEvolutionHook needs an epoch-based '
                            f'train loop, got {type(loop).__name__}')
        if loop.max_epochs != self.num_generations * E:
            raise ValueError(
                f'train_cfg.max_epochs is {loop.max_epochs}, but '
                f"{fields['num_generations']}={self.num_generations} x "
                f"{fields['epochs_per_generation']}={E} = "
                f'{self.num_generations * E}. Use train_cfg = dict(type='
                "'mmekd.KnowledgeEvolutionTrainLoop') to take the length from "
                'the hook')
        if self.generation_schedule is not None:
            if runner.param_schedulers:
                raise ValueError(
                    f"{fields['generation_schedule']} sets every "
                    "generation's schedule: the config's param_scheduler "
                    'must be empty (param_scheduler = None), got '
                    f'{len(runner.param_schedulers)} schedulers')
            runner.param_schedulers = runner.build_param_scheduler(
                self._expand_schedule(len(runner.train_dataloader)))
        if self.eval_split == 'test' and runner._test_loop is None:
            raise ValueError(
                "eval_split='test' needs test_dataloader, test_evaluator and "
                'test_cfg in the config')

    def _expand_schedule(self, iters_per_epoch: int) -> List[dict]:
        """``generation_schedule`` shifted into every generation."""
        E, out = self.epochs_per_generation, []
        for g in range(self.num_generations):
            for s in self.generation_schedule:
                s = copy.deepcopy(s)
                unit = E if s.get('by_epoch', True) else E * iters_per_epoch
                s['begin'] = g * unit + s.get('begin', 0)
                s['end'] = g * unit + s.get('end', unit)
                out.append(s)
        return out

    def before_train(self, runner) -> None:
        """Check the schedule, draw (or check) the split and set up the
        evaluation."""
        E = self.epochs_per_generation
        model = self._model(runner)
        if self.split is None:
            seed = runner.seed if self.seed is None else self.seed
            self.split = KESplit.from_model(model, self.split_mode,
                                            self.split_rate, seed)
        self.split.check_model(model)
        expected = max(runner.epoch - 1, 0) // E + 1
        if self.generation != expected:
            raise RuntimeError(
                f'Knowledge Evolution state says generation '
                f'{self.generation}, but epoch {runner.epoch} is in '
                f'generation {expected} (epochs_per_generation={E})')
        if self.restart_schedule:
            self._check_schedule(runner)
        self._slim = False
        if self.split_mode == 'kels' and self.evaluate_slim is not False:
            try:
                for net in self._nets(model):
                    check_slim_support(model, net)
                if 'model' not in (runner.cfg or {}):
                    raise TypeError('the runner has no model config')
                self._slim = True
            except TypeError as e:
                if self.evaluate_slim:
                    raise
                runner.logger.warning(f'Knowledge Evolution: no slim '
                                      f'evaluation ({e})')
        runner.message_hub.update_scalar('train/ke_generation',
                                         self.generation)
        runner.logger.info(
            f'Knowledge Evolution: {self.split_mode} split, s='
            f'{self.split_rate}, seed {self.split.seed}: fit hypothesis = '
            f'{100 * self.split.fit_ratio():.1f}% of '
            f'{len(self.split.layers)} conv/linear weights; generation '
            f'{self.generation}/{self.num_generations}, '
            f'{E} epochs each')

    @staticmethod
    def _nets(model) -> List[Optional[str]]:
        """The nets of ``model``: a DDNN's names, else ``[None]``."""
        return list(model.backbone.net_names) if is_ddnn(model) else [None]

    def _check_schedule(self, runner) -> None:
        """No scheduler may span a generation boundary, and every
        generation must have the same schedule."""
        schedulers = runner.param_schedulers or []
        if isinstance(schedulers, dict):
            schedulers = [s for v in schedulers.values() for s in v]
        E, G = self.epochs_per_generation, self.num_generations
        iters = len(runner.train_dataloader)
        per_gen = [[] for _ in range(G)]
        for s in schedulers:
            unit = E if s.by_epoch else E * iters
            for g in range(1, G):
                if s.begin < g * unit < s.end:
                    raise ValueError(
                        f'param_scheduler {type(s).__name__}(begin='
                        f'{s.begin}, end={s.end}, by_epoch={s.by_epoch}) '
                        f'spans the start of generation {g + 1} (step '
                        f'{g * unit}). Knowledge Evolution restarts the '
                        'schedule every generation: set the schedule of one '
                        'generation in the hook\'s generation_schedule '
                        '(see configs/ke/).')
            g = s.begin // unit
            if g >= G:
                raise ValueError(
                    f'param_scheduler {type(s).__name__}(begin={s.begin}, '
                    f'by_epoch={s.by_epoch}) starts after the last '
                    f'generation ({G} x {E} epochs)')
            per_gen[g].append((type(s).__name__, s.param_name,
                               s.begin - g * unit, s.end - g * unit))
        if any(p != per_gen[0] for p in per_gen):
            fields = self.config_fields(runner)
            raise ValueError(
                'Knowledge Evolution: the generations have different '
                'parameter schedules (the paper repeats the same one): '
                + '; '.join(f'generation {g + 1}: {p}'
                            for g, p in enumerate(per_gen))
                + f". Set one generation's schedule in "
                f"{fields['generation_schedule']} and param_scheduler = "
                'None')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.split is not None:
            checkpoint[STATE_KEY] = dict(
                split=self.split.state_dict(),
                generation=self.generation,
                history=[dict(h) for h in self.history])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(STATE_KEY)
        if state is None:
            return
        split = KESplit.from_state_dict(state['split'])
        if (split.mode, split.rate) != (self.split_mode, self.split_rate):
            raise ValueError(
                f'The checkpoint was trained with a {split.mode} split at '
                f's={split.rate}, but the hook has split_mode='
                f'{self.split_mode!r}, split_rate={self.split_rate}')
        self.split = split
        if runner._resume:
            self.generation = int(state['generation'])
            self.history = [dict(h) for h in state['history']]

    # ------------------------------------------------------------------ #
    # generations
    # ------------------------------------------------------------------ #
    def before_train_epoch(self, runner) -> None:
        """At a generation boundary: finish the old one, start the next."""
        epoch, E = runner.epoch, self.epochs_per_generation
        if epoch > 0 and epoch % E == 0 and epoch < runner.max_epochs:
            self._end_generation(runner)
            self._start_generation(runner, epoch // E + 1)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        """Right before the schedulers' first step of a new generation
        (the last iteration of a generation), restore initial values."""
        last_iter = batch_idx == len(runner.train_dataloader) - 1
        next_epoch = runner.epoch + 1
        if (self.restart_schedule and last_iter
                and next_epoch % self.epochs_per_generation == 0
                and next_epoch < runner.max_epochs):
            for optimizer in self._optimizers(runner):
                for group in optimizer.param_groups:
                    for key in list(group):
                        if key.startswith('initial_'):
                            group[key[len('initial_'):]] = group[key]

    def after_train(self, runner) -> None:
        if runner.epoch == runner.max_epochs:
            self._end_generation(runner)
        if self.history:
            table = self.results_table()
            runner.logger.info('Knowledge Evolution results (top-1 %, '
                               'FLOPs of backbone + neck for one image):\n'
                               + table)

    @staticmethod
    def _optimizers(runner) -> list:
        wrapper = runner.optim_wrapper
        wrappers = (wrapper.optim_wrappers.values() if isinstance(
            wrapper, OptimWrapperDict) else [wrapper])
        return [w.optimizer for w in wrappers]

    def _start_generation(self, runner, generation: int) -> None:
        seed = (self.split.seed + 1000003 * generation) % 2**63
        reset_hypothesis_(
            self._model(runner), self.split,
            torch.Generator().manual_seed(seed), self.reinit_cfg,
            self.reset_bias, self.reset_norm)
        for optimizer in self._optimizers(runner):
            optimizer.state.clear()
        self.generation = generation
        runner.message_hub.update_scalar('train/ke_generation', generation)
        runner.logger.info(
            f'Knowledge Evolution: generation {generation}/'
            f'{self.num_generations} starts at epoch {runner.epoch}: '
            're-drew the reset hypothesis, cleared the optimizer state')

    def _eval_loop(self, runner):
        """The loop whose dataloader and evaluator ``eval_split`` names
        (None: no validation set configured)."""
        if self.eval_split == 'test':
            return runner.test_loop
        return runner.val_loop

    def _end_generation(self, runner) -> None:
        g = self.generation
        if any(h['generation'] == g for h in self.history):
            return  # resumed from this generation's end: already done.
        result = dict(generation=g, epoch=runner.epoch)
        loop = self._eval_loop(runner)
        if loop is not None:
            model = self._model(runner)
            result.update(
                self._evaluate(loop, runner.model, loop.evaluator, 'dense'))
            if self._slim:
                for net in self._nets(model):
                    _, slim = extract_slim(model, runner.cfg.model,
                                           self.split.rate, net)
                    evaluator = loop.evaluator if net is None else \
                        single_net_evaluator(loop)
                    metrics = self._evaluate(loop, slim, evaluator, 'slim')
                    if net is not None:  # 'slim/accuracy/top1' -> net's key
                        metrics = {
                            k.replace('slim/accuracy/', f'slim/{net}/'): v
                            for k, v in metrics.items()
                        }
                    result.update(metrics)
            if not self.costs:
                self.costs = self._costs(runner, loop)
        self.history.append(result)
        runner.logger.info(f'Knowledge Evolution: generation {g}/'
                           f'{self.num_generations} done: ' + ', '.join(
                               f'{k}: {v:.4f}' if isinstance(v, float) else
                               f'{k}: {v}' for k, v in result.items()))
        runner.visualizer.add_scalars(
            {f'ke/{k}': v for k, v in result.items() if k != 'epoch'},
            step=runner.epoch)
        if is_main_process():
            atomic_write(
                osp.join(runner.work_dir, 'ke_results.md'),
                self.results_table() + '\n')
            atomic_write(
                osp.join(runner.work_dir, 'ke_results.json'),
                json.dumps(dict(costs=self.costs, history=self.history),
                           indent=1) + '\n')
        if self.save_generation_ckpt:
            self._save_generation_checkpoint(runner, g)

    @staticmethod
    def _save_generation_checkpoint(runner, generation: int) -> None:
        """``generation_<g>.pth``, written to a temporary file, fsynced and
        renamed: a crash never leaves a truncated generation checkpoint."""
        name = f'generation_{generation}.pth'
        runner.save_checkpoint(
            runner.work_dir, f'{name}.tmp',
            meta=dict(epoch=runner.epoch, iter=runner.iter))
        if is_main_process():  # save_checkpoint writes on the master only
            fsync_and_replace(
                osp.join(runner.work_dir, f'{name}.tmp'),
                osp.join(runner.work_dir, name))

    def _costs(self, runner, loop) -> Dict[str, Dict[str, int]]:
        """Parameters and FLOPs (backbone + neck, one image of the
        evaluation size) of every net, dense and slim:
        ``{net: dict(dense_params=..., dense_flops=..., slim_...)}``."""
        model = self._model(runner)
        batch = next(iter(loop.dataloader))
        with torch.no_grad():
            shape = tuple(
                model.data_preprocessor(batch, False)['inputs'].shape[1:])
        costs = {}
        for net in self._nets(model):
            dense = model
            if net is not None:
                dense = build_plain(plain_net(model, net,
                                              runner.cfg.model)[0])
            row = {
                f'dense_{k}': v
                for k, v in complexity(dense, shape).items()
            }
            if self._slim:
                _, slim = extract_slim(model, runner.cfg.model,
                                       self.split.rate, net)
                row.update({f'slim_{k}': v
                            for k, v in complexity(slim, shape).items()})
            costs[net or 'model'] = row
        return costs

    def results_table(self) -> str:
        """The markdown table of dense and slim top-1 of every net per
        generation, with parameters (M) and FLOPs (M, backbone + neck)."""
        lines = ['| generation | net | dense top-1 | slim top-1 | dense '
                 'params (M) | dense MFLOPs | slim params (M) | slim MFLOPs '
                 '|', '|---|---|---|---|---|---|---|---|']

        def fmt(value, scale=1.0, digits=2):
            return '-' if value is None else f'{value / scale:.{digits}f}'

        for h in self.history:
            for net, cost in (self.costs or {'model': {}}).items():
                prefix = 'accuracy' if net == 'model' else net
                cells = [
                    str(h['generation']), net,
                    fmt(h.get(f'dense/{prefix}/top1')),
                    fmt(h.get(f'slim/{prefix}/top1')),
                    fmt(cost.get('dense_params'), 1e6, 3),
                    fmt(cost.get('dense_flops'), 1e6, 2),
                    fmt(cost.get('slim_params'), 1e6, 3),
                    fmt(cost.get('slim_flops'), 1e6, 2)
                ]
                lines.append('| ' + ' | '.join(cells) + ' |')
        return '\n'.join(lines)

    @staticmethod
    @torch.no_grad()
    def _evaluate(loop, model, evaluator, name: str) -> Dict[str, float]:
        """Run ``loop``'s dataset through ``model`` with ``evaluator``;
        metrics are prefixed ``<name>/``."""
        training = model.training
        model.eval()
        for data_batch in loop.dataloader:
            outputs = model.val_step(data_batch)
            evaluator.process(data_samples=outputs, data_batch=data_batch)
        metrics = evaluator.evaluate(len(loop.dataloader.dataset))
        model.train(training)
        return {f'{name}/{k}': float(v) for k, v in metrics.items()}


def single_net_evaluator(loop) -> Evaluator:
    """MMPretrain's ``Accuracy`` with the top-k of ``loop``'s evaluator (a
    DDNN's :class:`mmekd.MultiNetAccuracy`), for one exported net."""
    topk = sorted({
        k
        for m in loop.evaluator.metrics for k in getattr(m, 'topk', (1, ))
    })
    evaluator = Evaluator(Accuracy(topk=tuple(topk) or (1, )))
    evaluator.dataset_meta = getattr(loop.dataloader.dataset, 'metainfo',
                                     None)
    return evaluator


def _check_generation_schedule(schedule: Optional[List[dict]],
                               epochs: int) -> Optional[List[dict]]:
    """Validate ``generation_schedule``: scheduler configs whose epoch
    ``begin``/``end`` lie in ``[0, epochs]``."""
    if schedule is None:
        return None
    if isinstance(schedule, dict):
        schedule = [schedule]
    if not isinstance(schedule, (list, tuple)) or not schedule:
        raise ValueError('generation_schedule must be a non-empty list of '
                         f'scheduler configs, got {schedule!r}')
    out = []
    for i, s in enumerate(schedule):
        if not isinstance(s, dict) or 'type' not in s:
            raise ValueError(f'generation_schedule[{i}] must be a scheduler '
                             f'config with a type, got {s!r}')
        s = dict(s)
        begin, end = s.get('begin', 0), s.get('end')
        if s.get('by_epoch', True):
            end = epochs if end is None else end
            if not 0 <= begin < end <= epochs:
                raise ValueError(
                    f'generation_schedule[{i}] ({s["type"]}): begin={begin}, '
                    f'end={end} must satisfy 0 <= begin < end <= '
                    f'epochs_per_generation={epochs} (epochs from the start '
                    'of the generation)')
        elif begin < 0 or (end is not None and end <= begin):
            raise ValueError(f'generation_schedule[{i}] ({s["type"]}): '
                             f'begin={begin}, end={end} (iterations)')
        out.append(s)
    return out

# Copyright (c) mmekd contributors. All rights reserved.
"""Knowledge Evolution (Taha et al., CVPR 2021) as an MMEngine hook."""
import math
from typing import Dict, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.runner import EpochBasedTrainLoop

from mmekd.models.utils import (KESplit, check_slim_support,
                                check_split_rate, extract_slim,
                                reset_hypothesis_)
from mmekd.models.utils.ke_split import SPLIT_MODES, check_weight_init
from mmekd.registry import HOOKS

STATE_KEY = 'knowledge_evolution'


@HOOKS.register_module()
class KnowledgeEvolutionHook(Hook):
    """Train any model for several generations with Knowledge Evolution.

    A split (:class:`mmekd.models.utils.KESplit`) divides every convolution
    and linear weight into a fit hypothesis, kept, and a reset hypothesis,
    re-drawn at the start of every generation after the first. The split is
    drawn once (from ``seed``) and stored in checkpoints under
    ``'knowledge_evolution'`` together with the current generation and the
    per-generation results, so a resumed run continues exactly.

    Generation ``g`` (1-based) covers epochs
    ``[(g-1)*E, g*E)`` with ``E = epochs_per_generation``; ``max_epochs``
    must be ``num_generations * E``. At each generation boundary the hook:

    1. evaluates the dense network and, for KELS, the slim network (the
       extracted fit hypothesis) on the validation set, logs both
       (``ke/dense/<metric>``, ``ke/slim/<metric>``) and saves
       ``generation_<g>.pth`` in the work dir (also after the last one);
    2. re-draws the reset hypothesis (``reinit_cfg``; BN and biases carry
       over unless ``reset_norm`` / ``reset_bias``) and clears the
       optimizer state (momentum buffers);
    3. with ``restart_schedule``, sets every scheduled optimizer value
       (``lr``, ``momentum``...) back to its ``initial_*`` value right before
       the schedulers' first step of the new generation. MMEngine schedulers
       are chainable (each step scales the current value), so the config
       lists one set of schedulers per generation, each inside
       ``[(g-1)*E, g*E)``; the hook checks that none spans a boundary.

    Args:
        num_generations (int): Number of generations ``G``.
        epochs_per_generation (int): Epochs per generation ``E``.
        split_mode (str): ``'kels'`` (kernel-level, convolution-aware:
            first ``ceil(s*C_out)`` filters x first ``ceil(s*C_in)`` input
            channels; stem keeps all image channels; classifier keeps all
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
        evaluate_slim (bool, optional): Evaluate the slim network at the end
            of every generation. None (default): if KELS and the model is a
            plain ResNet classifier (else a warning); True: required.
        save_generation_ckpt (bool): Save ``generation_<g>.pth``. Defaults to
            True.
    """

    priority = 'NORMAL'  # before ParamSchedulerHook (LOW): see step 3.

    def __init__(self,
                 num_generations: int,
                 epochs_per_generation: int,
                 split_mode: str = 'kels',
                 split_rate: float = 0.5,
                 seed: Optional[int] = None,
                 reinit_cfg: dict = dict(
                     type='kaiming_uniform', a=math.sqrt(5)),
                 reset_bias: bool = False,
                 reset_norm: bool = False,
                 restart_schedule: bool = True,
                 evaluate_slim: Optional[bool] = None,
                 save_generation_ckpt: bool = True):
        for name, value in (('num_generations', num_generations),
                            ('epochs_per_generation', epochs_per_generation)):
            if isinstance(value, bool) or not isinstance(value,
                                                         int) or value < 1:
                raise ValueError(f'{name} must be a positive int, got '
                                 f'{value!r}')
        if split_mode not in SPLIT_MODES:
            raise ValueError(f'split_mode must be one of {SPLIT_MODES}, got '
                             f'{split_mode!r}')
        if split_mode != 'kels' and (reset_norm or evaluate_slim):
            raise ValueError(
                "reset_norm and evaluate_slim need split_mode='kels' (WELS "
                'gives a sparse, not a slim, fit hypothesis)')
        self.num_generations = num_generations
        self.epochs_per_generation = epochs_per_generation
        self.split_mode = split_mode
        self.split_rate = check_split_rate(split_rate)
        self.seed = seed
        self.reinit_cfg = check_weight_init(reinit_cfg)
        self.reset_bias = reset_bias
        self.reset_norm = reset_norm
        self.restart_schedule = restart_schedule
        self.evaluate_slim = evaluate_slim
        self.save_generation_ckpt = save_generation_ckpt

        self.split: Optional[KESplit] = None
        self.generation = 1
        self.history: List[Dict[str, float]] = []
        self._slim = False

    # ------------------------------------------------------------------ #
    # set-up, state
    # ------------------------------------------------------------------ #
    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner) -> None:
        """Check the loop and schedule, draw (or check) the split."""
        loop, E = runner.train_loop, self.epochs_per_generation
        if not isinstance(loop, EpochBasedTrainLoop):
            raise TypeError('KnowledgeEvolutionHook needs an epoch-based '
                            f'train loop, got {type(loop).__name__}')
        if loop.max_epochs != self.num_generations * E:
            raise ValueError(
                f'train_cfg.max_epochs is {loop.max_epochs}, but '
                f'KnowledgeEvolutionHook has num_generations='
                f'{self.num_generations} x epochs_per_generation={E} = '
                f'{self.num_generations * E}')
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
        if self.split_mode == 'kels' and self.evaluate_slim is not False:
            try:
                check_slim_support(model)
                if 'model' not in (runner.cfg or {}):
                    raise TypeError('the runner has no model config')
                self._slim = True
            except TypeError as e:
                if self.evaluate_slim:
                    raise
                runner.logger.warning(f'Knowledge Evolution: no slim '
                                      f'evaluation ({e})')
                self._slim = False
        else:
            self._slim = False
        runner.message_hub.update_scalar('train/ke_generation',
                                         self.generation)
        runner.logger.info(
            f'Knowledge Evolution: {self.split_mode} split, s='
            f'{self.split_rate}, seed {self.split.seed}: fit hypothesis = '
            f'{100 * self.split.fit_ratio():.1f}% of '
            f'{len(self.split.layers)} conv/linear weights; generation '
            f'{self.generation}/{self.num_generations}, '
            f'{E} epochs each')

    def _check_schedule(self, runner) -> None:
        """No scheduler may span a generation boundary; warn if generations
        have different schedules."""
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
                        'schedule every generation: give every generation '
                        'its own schedulers with begin/end inside it (see '
                        'configs/ke/).')
            g = min(s.begin // unit, G - 1)
            per_gen[g].append((type(s).__name__, s.param_name,
                               s.begin - g * unit, s.end - g * unit))
        if any(p != per_gen[0] for p in per_gen):
            runner.logger.warning(
                'Knowledge Evolution: the generations have different '
                'parameter schedules (the paper repeats the same one)')

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

    def _end_generation(self, runner) -> None:
        g = self.generation
        if any(h['generation'] == g for h in self.history):
            return  # resumed from this generation's end: already done.
        result = dict(generation=g, epoch=runner.epoch)
        if runner.val_loop is not None:
            result.update(self._evaluate(runner, runner.model, 'dense'))
            if self._slim:
                _, slim = extract_slim(
                    self._model(runner), runner.cfg.model, self.split.rate)
                result.update(self._evaluate(runner, slim, 'slim'))
        self.history.append(result)
        runner.logger.info(f'Knowledge Evolution: generation {g}/'
                           f'{self.num_generations} done: ' + ', '.join(
                               f'{k}: {v:.4f}' if isinstance(v, float) else
                               f'{k}: {v}' for k, v in result.items()))
        runner.visualizer.add_scalars(
            {f'ke/{k}': v for k, v in result.items() if k != 'epoch'},
            step=runner.epoch)
        if self.save_generation_ckpt:
            runner.save_checkpoint(
                runner.work_dir, f'generation_{g}.pth',
                meta=dict(epoch=runner.epoch, iter=runner.iter))

    @staticmethod
    @torch.no_grad()
    def _evaluate(runner, model, name: str) -> Dict[str, float]:
        """Run the validation set through ``model`` with the validation
        evaluator; metrics are prefixed ``<name>/``."""
        loop = runner.val_loop
        training = model.training
        model.eval()
        for data_batch in loop.dataloader:
            outputs = model.val_step(data_batch)
            loop.evaluator.process(data_samples=outputs,
                                   data_batch=data_batch)
        metrics = loop.evaluator.evaluate(len(loop.dataloader.dataset))
        model.train(training)
        return {f'{name}/{k}': float(v) for k, v in metrics.items()}

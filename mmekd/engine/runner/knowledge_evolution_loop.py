# Copyright (c) mmekd contributors. All rights reserved.
"""The epoch-based train loop of a Knowledge Evolution run: its length is
the KE hook's ``num_generations * epochs_per_generation``."""
from typing import List, Optional, Tuple

from mmengine.runner import EpochBasedTrainLoop

from mmekd.registry import LOOPS
from ..hooks.knowledge_evolution_hook import KnowledgeEvolutionHook


@LOOPS.register_module()
class KnowledgeEvolutionTrainLoop(EpochBasedTrainLoop):
    """:class:`EpochBasedTrainLoop` whose ``max_epochs`` comes from the
    :class:`mmekd.KnowledgeEvolutionHook` in ``custom_hooks``, so that the
    generations and their epochs are set in one place::

        train_cfg = dict(type='mmekd.KnowledgeEvolutionTrainLoop',
                         val_interval=10)

    Args:
        runner (Runner): The runner (its hooks are registered already).
        dataloader (DataLoader | dict): The training dataloader.
        max_epochs (int, optional): Leave unset. If given, it must equal
            ``num_generations * epochs_per_generation`` of the hook; a
            different value is refused.
        val_begin (int): Epoch to start validating. Defaults to 1.
        val_interval (int): Validation interval. Defaults to 1.
        dynamic_intervals (list, optional): As in
            :class:`EpochBasedTrainLoop`.
    """

    def __init__(self,
                 runner,
                 dataloader,
                 max_epochs: Optional[int] = None,
                 val_begin: int = 1,
                 val_interval: int = 1,
                 dynamic_intervals: Optional[List[Tuple[int, int]]] = None):
        hooks = [
            h for h in runner.hooks if isinstance(h, KnowledgeEvolutionHook)
        ]
        if len(hooks) != 1:
            raise ValueError(
                'train_cfg type KnowledgeEvolutionTrainLoop takes its length '
                'from the one mmekd.KnowledgeEvolutionHook in custom_hooks; '
                f'found {len(hooks)}')
        hook = hooks[0]
        derived = hook.num_generations * hook.epochs_per_generation
        if max_epochs is not None and max_epochs != derived:
            fields = hook.config_fields(runner)
            raise ValueError(
                f'train_cfg.max_epochs={max_epochs!r} contradicts '
                f"{fields['num_generations']}={hook.num_generations} x "
                f"{fields['epochs_per_generation']}="
                f'{hook.epochs_per_generation} = {derived}: the run length '
                'follows from the Knowledge Evolution hook; remove '
                'train_cfg.max_epochs or change the hook')
        super().__init__(runner, dataloader, derived, val_begin, val_interval,
                         dynamic_intervals)

# Copyright (c) mmekd contributors. All rights reserved.
from .console import SetupToLogFileFilter, SetupToLogFileRunner
from .eval_runner import EvalRunner
from .knowledge_evolution_loop import KnowledgeEvolutionTrainLoop

__all__ = [
    'EvalRunner', 'KnowledgeEvolutionTrainLoop', 'SetupToLogFileFilter',
    'SetupToLogFileRunner'
]

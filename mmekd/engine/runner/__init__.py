# Copyright (c) mmekd contributors. All rights reserved.
from .console import SetupToLogFileFilter, SetupToLogFileRunner
from .knowledge_evolution_loop import KnowledgeEvolutionTrainLoop

__all__ = [
    'KnowledgeEvolutionTrainLoop', 'SetupToLogFileFilter',
    'SetupToLogFileRunner'
]

# Copyright (c) mmekd contributors. All rights reserved.
from .knowledge_evolution_loop import KnowledgeEvolutionTrainLoop

__all__ = ['KnowledgeEvolutionTrainLoop']

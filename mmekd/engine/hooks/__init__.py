# Copyright (c) mmekd contributors. All rights reserved.
from .atomic_checkpoint_hook import AtomicCheckpointHook
from .checkpoint_keys_hook import CheckpointKeysHook
from .exact_resume_hook import ExactResumeHook
from .knowledge_evolution_hook import KnowledgeEvolutionHook

__all__ = [
    'AtomicCheckpointHook', 'CheckpointKeysHook', 'ExactResumeHook',
    'KnowledgeEvolutionHook'
]

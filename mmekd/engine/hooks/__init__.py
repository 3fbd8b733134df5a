# Copyright (c) mmekd contributors. All rights reserved.
from .atomic_checkpoint_hook import AtomicCheckpointHook
from .checkpoint_keys_hook import CheckpointKeysHook
from .class_count_hook import ClassCountError, ClassCountHook
from .deferred_runtime_info_hook import DeferredRuntimeInfoHook
from .exact_resume_hook import ExactResumeHook
from .knowledge_evolution_hook import KnowledgeEvolutionHook
from .log_interval_hook import ShortEpochLogIntervalHook
from .preemption_checkpoint_hook import (PreemptionCheckpointHook,
                                         TrainingPreempted)

__all__ = [
    'AtomicCheckpointHook', 'CheckpointKeysHook', 'ClassCountError',
    'ClassCountHook', 'DeferredRuntimeInfoHook', 'ExactResumeHook',
    'KnowledgeEvolutionHook', 'PreemptionCheckpointHook',
    'ShortEpochLogIntervalHook', 'TrainingPreempted'
]

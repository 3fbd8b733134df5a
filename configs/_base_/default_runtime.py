# Runtime shared by all mmekd configs (mirrors MMPretrain's default runtime).
default_scope = 'mmpretrain'
# mmekd components are referred to as 'mmekd.<Name>'; importing the package
# also installs the safe checkpoint loader (torch>=2.6 weights_only).
custom_imports = dict(imports=['mmekd'], allow_failed_imports=False)

default_hooks = dict(
    # RuntimeInfoHook that keeps the logged losses on the device until the
    # logger prints them (no host sync in the other iterations); there it
    # also has SafeOptimWrapper(check='device') report its pending checks.
    runtime_info=dict(type='mmekd.DeferredRuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # save_best='auto' takes the first metric: 'full/top1' for DDNN models.
    # AtomicCheckpointHook: CheckpointHook that writes temp file + rename, so
    # a killed run never leaves a truncated checkpoint or a dangling
    # last_checkpoint.
    checkpoint=dict(
        type='mmekd.AtomicCheckpointHook', interval=1, max_keep_ckpts=3,
        save_best='auto'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
    # Resume mid-epoch exactly: skip consumed batches, restore RNG states.
    exact_resume=dict(type='mmekd.ExactResumeHook'),
    # SIGTERM (Slurm pre-emption, scancel, time limit): finish the iteration,
    # save iter_N.pth atomically, exit 143; --resume continues exactly.
    preemption=dict(type='mmekd.PreemptionCheckpointHook'),
    # model.head.num_classes against the classes of each dataset read: too
    # few is an error, too many a warning naming the meaningless top-k.
    class_count=dict(type='mmekd.ClassCountHook'),
)
# Progress (with ETA) a few times per epoch, even in short epochs.
custom_hooks = [
    dict(type='mmekd.ShortEpochLogIntervalHook', lines_per_epoch=4)
]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)

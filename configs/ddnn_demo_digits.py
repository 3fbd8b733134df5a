# The quick-start demo: DDNN + EKD on scikit-learn's real handwritten digits
# (shipped with the package, no download), CPU-sized. A narrow CIFAR-style
# ResNet-34 [3,4,6,3] containing ResNet-18 [2,2,2,2] and ResNet-10 [1,1,1,1].
_base_ = [
    '_base_/models/ddnn_ekd.py',
    '_base_/datasets/digits_bs64.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(
        type='mmekd.DepthDynamicResNetCIFAR',
        depth=34,
        stem_channels=16,
        base_channels=16,
        sub_stage_blocks=[[2, 2, 2, 2], [1, 1, 1, 1]]),
    head=dict(num_classes=10, in_channels=128),
)
val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='mmekd.SafeOptimWrapper',  # stops (or skips) on a NaN/inf loss
    # checked on the device where the optimizer is fused (no host sync),
    # reported at the next log line; check='host' checks every iteration
    check='device',
    # fused SGD (one kernel for all parameters) where the device has it,
    # else foreach; optimizer.fused / optimizer.foreach override
    constructor='mmekd.FusedOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=12),
]
train_cfg = dict(by_epoch=True, max_epochs=12, val_interval=4)
val_cfg = dict()
test_cfg = dict()
# Fields only: the hook types stay the _base_ runtime's (a `type` here would
# replace mmekd.AtomicCheckpointHook and lose its crash safety).
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=4, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

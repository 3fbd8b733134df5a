# Knowledge Evolution (KELS, s=0.5) on small-data CIFAR-100: the first 50
# training images of every class (5,000), validated on a held-out 50 per
# class (the last 50 of every class of the train file). CIFAR ResNet-18 from
# scratch, label smoothing 0.1, 5 generations x 60 epochs, every generation
# with its own 5-epoch warm-up + cosine schedule.
_base_ = [
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/default_runtime.py',
]

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet_CIFAR',
        depth=18,
        num_stages=4,
        out_indices=(3, ),
        style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=512,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5),
    ))

train_dataloader = dict(
    batch_size=64, dataset=dict(max_per_class=50))

optim_wrapper = dict(
    type='mmekd.SafeOptimWrapper',  # stops (or skips) on a NaN/inf loss
    # checked on the device where the optimizer is fused (no host sync),
    # reported at the next log line; check='host' checks every iteration
    check='device',
    # fused SGD (one kernel for all parameters) where the device has it,
    # else foreach; optimizer.fused / optimizer.foreach override
    constructor='mmekd.FusedOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
# The run length (5 x 60 epochs) and the schedule of every generation (a
# 5-epoch warm-up + cosine, restarted) follow from the KE hook below.
param_scheduler = None
train_cfg = dict(type='mmekd.KnowledgeEvolutionTrainLoop', val_interval=10)
val_cfg = dict()
test_cfg = dict()

custom_hooks = [
    dict(
        type='mmekd.KnowledgeEvolutionHook',
        num_generations=5,
        epochs_per_generation=60,
        generation_schedule=[
            dict(type='LinearLR', start_factor=1 / 5, by_epoch=True, begin=0,
                 end=5),
            dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True,
                 begin=5),
        ],
        split_mode='kels',
        split_rate=0.5),
]
default_hooks = dict(
    checkpoint=dict(interval=10, max_keep_ckpts=2, save_best=None))

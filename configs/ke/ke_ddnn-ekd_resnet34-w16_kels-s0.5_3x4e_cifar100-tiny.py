# Knowledge Evolution on a DDNN, CPU-sized CIFAR-100 proxy: CIFAR ResNet-34
# at 1/4 width (stem/base 16) with ResNet-18 [2,2,2,2] and ResNet-10
# [1,1,1,1] inside, trained with EKD on the first 20 training images of each
# class (2,000), evaluated on the first 10 of the 50 held-out images per class
# (1,000); KELS s=0.5, 3 generations x 4 epochs, each with a 1-epoch warm-up
# + cosine. One run gives the dense full/sub0/sub1 nets and their slim
# (half-width) networks.
_base_ = [
    '../_base_/models/ddnn_ekd.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        type='mmekd.DepthDynamicResNetCIFAR',
        depth=34,
        stem_channels=16,
        base_channels=16,
        sub_stage_blocks=[[2, 2, 2, 2], [1, 1, 1, 1]]),
    head=dict(
        num_classes=100,
        in_channels=128,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)))
train_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False,
    dataset=dict(max_per_class=20))
val_dataloader = dict(
    batch_size=250, num_workers=0, persistent_workers=False,
    dataset=dict(max_per_class=10))
test_dataloader = val_dataloader
val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='mmekd.SafeOptimWrapper',  # stops (or skips) on a NaN/inf loss
    # checked on the device where the optimizer is fused (no host sync),
    # reported at the next log line; check='host' checks every iteration
    check='device',
    # fused SGD (one kernel for all parameters) where the device has it,
    # else foreach; optimizer.fused / optimizer.foreach override
    constructor='mmekd.FusedOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
train_cfg = dict(type='mmekd.KnowledgeEvolutionTrainLoop', val_interval=100)
val_cfg = dict()
test_cfg = dict()
custom_hooks = [
    dict(
        type='mmekd.KnowledgeEvolutionHook',
        num_generations=3,
        epochs_per_generation=4,
        generation_schedule=[
            dict(type='LinearLR', start_factor=1 / 4, by_epoch=True, begin=0,
                 end=1, convert_to_iter_based=True),
            dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True,
                 begin=1),
        ],
        split_mode='kels',
        split_rate=0.5,
        seed=0),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=4, max_keep_ckpts=1, save_best=None))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

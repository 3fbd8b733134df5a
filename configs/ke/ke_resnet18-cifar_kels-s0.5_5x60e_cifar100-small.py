# Knowledge Evolution (KELS, s=0.5) on small-data CIFAR-100: the first 50
# training images of every class (5,000), validated on a held-out 50 per
# class (the last 50 of every class of the train file). CIFAR ResNet-18 from
# scratch, label smoothing 0.1, 5 generations x 60 epochs, every generation
# with its own 5-epoch warm-up + cosine schedule.
_base_ = [
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/default_runtime.py',
]

ke_generations = 5
ke_epochs = 60  # per generation
ke_warmup = 5

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
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
# One warm-up + cosine per generation. MMEngine schedulers are chainable
# (each step scales the current lr), so the KE hook resets the lr to its
# initial value right before each generation's first scheduler step and
# checks that no scheduler spans a generation boundary.
param_scheduler = [
    s for g in range(ke_generations) for s in (
        dict(type='LinearLR', start_factor=1 / ke_warmup, by_epoch=True,
             begin=g * ke_epochs, end=g * ke_epochs + ke_warmup),
        dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True,
             begin=g * ke_epochs + ke_warmup, end=(g + 1) * ke_epochs),
    )
]
train_cfg = dict(
    by_epoch=True, max_epochs=ke_generations * ke_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()

custom_hooks = [
    dict(
        type='mmekd.KnowledgeEvolutionHook',
        num_generations=ke_generations,
        epochs_per_generation=ke_epochs,
        split_mode='kels',
        split_rate=0.5),
]
default_hooks = dict(
    checkpoint=dict(interval=10, max_keep_ckpts=2, save_best=None))

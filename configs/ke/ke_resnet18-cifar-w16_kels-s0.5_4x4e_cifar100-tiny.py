# CPU-sized Knowledge Evolution run used for the evidence in
# docs/knowledge_evolution.md: CIFAR ResNet-18 at 1/4 width (stem/base 16),
# the first 20 training images of each of the 100 classes (2,000), validated
# on the first 10 of the 50 held-out images per class (1,000); KELS s=0.5,
# 4 generations x 4 epochs, each with a 1-epoch warm-up + cosine.
_base_ = ['./ke_resnet18-cifar_kels-s0.5_5x60e_cifar100-small.py']

model = dict(
    backbone=dict(stem_channels=16, base_channels=16),
    head=dict(in_channels=128))
train_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False,
    dataset=dict(max_per_class=20))
val_dataloader = dict(
    batch_size=250, num_workers=0, persistent_workers=False,
    dataset=dict(max_per_class=10))
test_dataloader = val_dataloader
train_cfg = dict(val_interval=100)
custom_hooks = [
    dict(
        type='mmekd.KnowledgeEvolutionHook',
        num_generations=4,
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

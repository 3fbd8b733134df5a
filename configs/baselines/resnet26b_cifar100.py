# Baseline for the DDNN comparison: CIFAR bottleneck ResNet-26 [2,2,2,2]
# trained alone with the same recipe as the DDNN config
# (ddnn_r50_cifar100.py).
_base_ = [
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_200e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmekd.DepthDynamicResNetCIFAR',
        depth=50,
        stage_blocks=(2, 2, 2, 2)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)

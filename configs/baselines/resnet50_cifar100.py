# Baseline for the DDNN comparison: CIFAR ResNet-50 [3,4,6,3] trained alone
# with the same recipe as the DDNN config (ddnn_r50_cifar100.py).
_base_ = [
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_200e.py',
    '../_base_/default_runtime.py',
]
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet_CIFAR', depth=50),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)

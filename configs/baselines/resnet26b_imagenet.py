# Baseline for the DDNN comparison: bottleneck ResNet-26 [2,2,2,2] trained
# alone with the same recipe as the DDNN config (ddnn_r50_imagenet.py).
_base_ = [
    '../_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/imagenet_bs256.py',
    '../_base_/default_runtime.py',
]
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmekd.DepthDynamicResNet', depth=50, stage_blocks=(2, 2, 2, 2)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)

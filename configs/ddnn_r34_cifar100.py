# DDNN + EKD on CIFAR-100: CIFAR ResNet-34 [3,4,6,3] containing ResNet-18
# [2,2,2,2]. Baselines with the same recipe: baselines/resnet34_cifar100.py,
# baselines/resnet18_cifar100.py.
_base_ = [
    '_base_/models/ddnn_ekd.py',
    '_base_/datasets/cifar100_bs128.py',
    '_base_/schedules/cifar_bs128_200e.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(
        type='mmekd.DepthDynamicResNetCIFAR',
        depth=34,
        sub_stage_blocks=[[2, 2, 2, 2]]),
    head=dict(num_classes=100, in_channels=512),
)
val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

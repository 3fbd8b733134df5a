# DDNN + EKD on CIFAR-100: CIFAR ResNet-50 [3,4,6,3] (Bottleneck) containing
# ResNet-26 [2,2,2,2] and ResNet-44 [3,4,4,3] bottleneck sub-nets. Baselines:
# baselines/resnet{50,26b,44b}_cifar100.py.
_base_ = [
    '_base_/models/ddnn_ekd.py',
    '_base_/datasets/cifar100_bs128.py',
    '_base_/schedules/cifar_bs128_200e.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(
        type='mmekd.DepthDynamicResNetCIFAR',
        depth=50,
        sub_stage_blocks=[[2, 2, 2, 2], [3, 4, 4, 3]]),
    head=dict(num_classes=100, in_channels=2048),
)
val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

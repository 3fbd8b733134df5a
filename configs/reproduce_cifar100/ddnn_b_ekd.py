# Reproduction row, bottleneck family: DDNN + EKD, CIFAR ResNet-50 [3,4,6,3]
# containing bottleneck ResNet-26 [2,2,2,2] and ResNet-44 [3,4,4,3] (the model
# of ../ddnn_r50_cifar100.py), on the fast data path.
_base_ = ['../ddnn_r34_cifar100_fastdata.py']
model = dict(
    backbone=dict(depth=50, sub_stage_blocks=[[2, 2, 2, 2], [3, 4, 4, 3]]),
    head=dict(in_channels=2048))

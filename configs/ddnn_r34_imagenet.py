# DDNN + EKD on ImageNet-1k: ResNet-34 [3,4,6,3] containing ResNet-18
# [2,2,2,2]; recipe of MMPretrain's resnet34_8xb32_in1k (8 GPUs x 32).
# Baselines: baselines/resnet{34,18}_imagenet.py.
_base_ = [
    '_base_/models/ddnn_ekd.py',
    '_base_/datasets/imagenet_bs32.py',
    '_base_/schedules/imagenet_bs256.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(depth=34, sub_stage_blocks=[[2, 2, 2, 2]]),
    head=dict(num_classes=1000, in_channels=512),
)
val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

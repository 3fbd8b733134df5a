# DDNN + EKD on ImageNet-1k: ResNet-50 [3,4,6,3] (Bottleneck) containing
# ResNet-26 [2,2,2,2] and ResNet-44 [3,4,4,3] bottleneck sub-nets; recipe of
# MMPretrain's resnet50_8xb32_in1k (8 GPUs x 32, 100 epochs, step lr).
# Baselines: baselines/resnet{50,26b,44b}_imagenet.py.
_base_ = [
    '_base_/models/ddnn_ekd.py',
    '_base_/datasets/imagenet_bs32.py',
    '_base_/schedules/imagenet_bs256.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(depth=50, sub_stage_blocks=[[2, 2, 2, 2], [3, 4, 4, 3]]),
    head=dict(num_classes=1000, in_channels=2048),
)
val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

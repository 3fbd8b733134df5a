# CPU demo of the ConvNeXt family: DDNN + EKD on scikit-learn's handwritten
# digits (shipped with the package, no download), 16x16. A narrow ConvNeXt
# [2,2,6,2] (channels 16/32/64/128) containing [2,2,2,2]: the ConvNeXt-S ⊃
# ConvNeXt-T pattern (the third stage shortened). A 2x2 stem instead of the
# stock 4x4, so that the four stages see 8, 4, 2 and 1 pixels.
#   python tools/train.py configs/ddnn_convnext_demo_digits.py
_base_ = [
    '_base_/models/ddnn_ekd.py',
    '_base_/datasets/digits_bs64.py',
    '_base_/schedules/digits_adamw_12e.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmekd.DepthDynamicConvNeXt',
        arch=dict(depths=[2, 2, 6, 2], channels=[16, 32, 64, 128]),
        stem_patch_size=2,
        sub_stage_blocks=[[2, 2, 2, 2]],
        drop_path_rate=0.0),
    neck=None,  # the stock ConvNeXt pools before its final norm
    head=dict(num_classes=10, in_channels=128),
    at_stages=None,  # the backbone's default: all four stages
)
val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=4e-3))
# Fields only: the hook types stay the _base_ runtime's.
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=4, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

# CPU demo of the Swin Transformer family: DDNN + EKD on scikit-learn's
# handwritten digits (shipped with the package, no download), 16x16. A
# narrow Swin [2,2,6,2] (embedding 16, heads 1/2/4/8) containing [2,2,2,2]:
# the Swin-S ⊃ Swin-T pattern (the third stage shortened, the first blocks
# of each stage kept, so the shifted windows still alternate). Patches of
# 1 pixel and 2x2 windows: the four stages see 16, 8, 4 and 2 tokens a
# side, never fewer than a window.
#   python tools/train.py configs/ddnn_swin_demo_digits.py
_base_ = [
    '_base_/models/ddnn_ekd.py',
    '_base_/datasets/digits_bs64.py',
    '_base_/schedules/digits_adamw_12e.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmekd.DepthDynamicSwinTransformer',
        arch=dict(embed_dims=16, depths=[2, 2, 6, 2], num_heads=[1, 2, 4, 8]),
        img_size=16,
        patch_size=1,
        window_size=2,
        sub_stage_blocks=[[2, 2, 2, 2]],
        drop_path_rate=0.0),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(num_classes=10, in_channels=128),
    at_stages=None,  # the backbone's default: all four stages
)
val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(paramwise_cfg=dict(
    custom_keys={'.relative_position_bias_table': dict(decay_mult=0.0)}))
# Fields only: the hook types stay the _base_ runtime's.
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=4, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

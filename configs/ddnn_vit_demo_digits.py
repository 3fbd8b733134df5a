# CPU demo of the Vision Transformer family: DDNN + EKD on scikit-learn's
# handwritten digits (shipped with the package, no download), 16x16. A
# narrow 8-layer ViT (64 dims, 4 heads) containing its first 4 and first 6
# layers: the DeiT-S 12 ⊃ 6, 9 pattern at 2/3 the depth. 4x4 patches: 16
# patch tokens and the class token.
#   python tools/train.py configs/ddnn_vit_demo_digits.py
_base_ = [
    '_base_/models/ddnn_ekd.py',
    '_base_/datasets/digits_bs64.py',
    '_base_/schedules/digits_adamw_12e.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmekd.DepthDynamicVisionTransformer',
        arch=dict(
            embed_dims=64, num_layers=8, num_heads=4,
            feedforward_channels=128),
        img_size=16,
        patch_size=4,
        sub_stage_blocks=[[4], [6]]),
    neck=None,  # the class token
    head=dict(num_classes=10, in_channels=64),
    at_stages=None,  # the backbone's default: its one stage
)
val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    '.cls_token': dict(decay_mult=0.0),
    '.pos_embed': dict(decay_mult=0.0)
}))
# A ViT learns the digits more slowly than the convolutional and windowed
# nets: 30 epochs (12 gave 79 % top-1).
train_cfg = dict(max_epochs=30, val_interval=10)
# Fields only: the hook types stay the _base_ runtime's.
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=10, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

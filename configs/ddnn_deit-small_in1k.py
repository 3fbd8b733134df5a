# DDNN + EKD on ImageNet-1k: DeiT-S (ViT, 12 layers, 384 dims, 6 heads)
# containing its first 6 and first 9 layers, on MMPretrain's own DeiT-S
# recipe (deit-small_4xb256_in1k: AdamW lr 1e-3 at batch 1024, 300 epochs,
# Mixup/CutMix, label smoothing, clip_grad max_norm 5, no drop path),
# unchanged but for the DDNN lines below. Baselines: baselines/vit-{6l,9l}_
# deit-small-recipe_in1k.py, baselines/deit-small_deit-small-recipe_in1k.py.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py']

model = dict(
    type='mmekd.DDNNClassifier',
    backbone=dict(
        type='mmekd.DepthDynamicVisionTransformer',
        # sub0: 6 layers, sub1: 9 layers; every net ends with the shared
        # final norm and classifies its class token
        sub_stage_blocks=[[6], [9]]),
    # The recipe's VisionTransformerClsHead (no hidden layer) is one linear
    # layer on the class token, zero-initialised; here one linear
    # classifier for every net (MultiNetClsHead, a LinearClsHead per net,
    # same initialisation, same label-smoothing loss). Its weights are
    # head.fc.*, not head.layers.head.* as in MMPretrain's DeiT checkpoints.
    head=dict(
        type='mmekd.MultiNetClsHead',
        init_cfg=dict(type='Constant', layer='Linear', val=0)))
# Attention distillation: the patch tokens of each net's last layer as a
# (N, 384, 14, 14) map (the class token left out).

# several backward passes per iteration (the memory-efficient step) count
# as one, and a NaN loss stops the run; the recipe's clip_grad (max_norm 5)
# clips the summed gradient of all nets, once per iteration
optim_wrapper = dict(type='mmekd.SafeOptimWrapper')
# Under DDP, keep the memory-efficient step (per-net backwards, one
# gradient all-reduce).
model_wrapper_cfg = dict(
    type='mmekd.DDNNDistributedDataParallel',
    broadcast_buffers=False,
    find_unused_parameters=False)

val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

default_hooks = dict(checkpoint=dict(type='mmekd.AtomicCheckpointHook'),
                     exact_resume=dict(type='mmekd.ExactResumeHook'),
                     preemption=dict(type='mmekd.PreemptionCheckpointHook'))

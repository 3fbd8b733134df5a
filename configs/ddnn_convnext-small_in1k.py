# DDNN + EKD on ImageNet-1k: ConvNeXt-S [3,3,27,3] containing ConvNeXt-T
# [3,3,9,3] (same channels), on MMPretrain's own ConvNeXt-S recipe
# (convnext-small_32xb128_in1k: AdamW lr 4e-3 at batch 4096, 300 epochs,
# Mixup/CutMix, label smoothing, drop path 0.4, EMAHook), unchanged but for
# the DDNN lines below. Baselines: baselines/convnext-{tiny,small}_
# convnext-small-recipe_in1k.py.
_base_ = ['mmpretrain::convnext/convnext-small_32xb128_in1k.py']

model = dict(
    type='mmekd.DDNNClassifier',
    backbone=dict(
        type='mmekd.DepthDynamicConvNeXt',
        sub_stage_blocks=[[3, 3, 9, 3]],
        # drop path 0.4 spread over each net's own blocks: ConvNeXt-T gets
        # the rates a stock ConvNeXt-T gets from 0.4 (its own recipe: 0.1);
        # drop_path='full_net' gives it the full net's rates instead.
        drop_path='per_net'),
    # One linear classifier for every net, the recipe's LinearClsHead
    # (label smoothing) per net; Mixup/CutMix soft targets reach every net.
    head=dict(type='mmekd.MultiNetClsHead'))
# Attention distillation: the last block's output of each of the 4 stages
# (before the final norm and pooling), the backbone's default.

# several backward passes per iteration (the memory-efficient step) count
# as one, and a NaN loss stops the run (clip_grad=None as in the recipe)
optim_wrapper = dict(type='mmekd.SafeOptimWrapper')
# Under DDP, keep the memory-efficient step (per-net backwards, one
# gradient all-reduce).
model_wrapper_cfg = dict(
    type='mmekd.DDNNDistributedDataParallel',
    broadcast_buffers=False,
    find_unused_parameters=False)

val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

# The recipe's EMAHook (momentum 1e-4) stays: it averages all shared
# weights, so every net is evaluated with the averaged ones.
default_hooks = dict(checkpoint=dict(type='mmekd.AtomicCheckpointHook'),
                     exact_resume=dict(type='mmekd.ExactResumeHook'),
                     preemption=dict(type='mmekd.PreemptionCheckpointHook'))

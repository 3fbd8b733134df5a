# DDNN + EKD on ImageNet-1k: Swin-S [2,2,18,2] containing Swin-T [2,2,6,2]
# (same embedding and heads), on MMPretrain's own Swin-S recipe
# (swin-small_16xb64_in1k: AdamW lr 1e-3 at batch 1024, 300 epochs,
# Mixup/CutMix, label smoothing, drop path 0.3, clip_grad max_norm 5),
# unchanged but for the DDNN lines below. Baselines: baselines/swin-{tiny,
# small}_swin-small-recipe_in1k.py.
_base_ = ['mmpretrain::swin_transformer/swin-small_16xb64_in1k.py']

model = dict(
    type='mmekd.DDNNClassifier',
    backbone=dict(
        type='mmekd.DepthDynamicSwinTransformer',
        # the first blocks of each stage: Swin shifts its windows in every
        # odd block, which a sub-net keeps this way
        sub_stage_blocks=[[2, 2, 6, 2]],
        # drop path 0.3 spread over each net's own blocks: Swin-T gets the
        # rates a stock Swin-T gets from 0.3 (its own recipe: 0.2);
        # drop_path='full_net' gives it the full net's rates instead.
        drop_path='per_net'),
    # One linear classifier for every net, the recipe's LinearClsHead
    # (label smoothing) per net; Mixup/CutMix soft targets reach every net.
    head=dict(type='mmekd.MultiNetClsHead'))
# Attention distillation: the last block's tokens of each of the 4 stages
# as (N, C, H, W) maps, before the patch merging and the stage norm.

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

# Baseline for the DDNN comparison: a 9-layer DeiT-S (ViT, 384 dims, 6
# heads; sub1 of ddnn_deit-small_in1k.py, no stock arch of this depth)
# trained alone with the DDNN config's recipe, MMPretrain's
# deit-small_4xb256_in1k (no drop path, clip_grad max_norm 5), with the same
# optimizer wrapper and crash-safe hooks.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py']

model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=384,
            num_layers=9,
            num_heads=6,
            feedforward_channels=1536)))
# a NaN loss stops the run (same optimizer, arguments and clip_grad)
optim_wrapper = dict(type='mmekd.SafeOptimWrapper')
default_hooks = dict(checkpoint=dict(type='mmekd.AtomicCheckpointHook'),
                     exact_resume=dict(type='mmekd.ExactResumeHook'),
                     preemption=dict(type='mmekd.PreemptionCheckpointHook'))

# Baseline for the DDNN comparison: DeiT-S, 12 layers (the full net of
# ddnn_deit-small_in1k.py) trained alone: MMPretrain's own
# deit-small_4xb256_in1k recipe (its VisionTransformerClsHead: one
# zero-initialised linear layer on the class token, as the DDNN's per-net
# head), with the same optimizer wrapper and crash-safe hooks as the DDNN
# config.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py']

# a NaN loss stops the run (same optimizer, arguments and clip_grad)
optim_wrapper = dict(type='mmekd.SafeOptimWrapper')
default_hooks = dict(checkpoint=dict(type='mmekd.AtomicCheckpointHook'),
                     exact_resume=dict(type='mmekd.ExactResumeHook'),
                     preemption=dict(type='mmekd.PreemptionCheckpointHook'))

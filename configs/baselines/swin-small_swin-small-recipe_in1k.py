# Baseline for the DDNN comparison: Swin-S [2,2,18,2] (the full net of
# ddnn_swin-small_in1k.py) trained alone: MMPretrain's own
# swin-small_16xb64_in1k recipe (drop path 0.3, clip_grad max_norm 5), with
# the same optimizer wrapper and crash-safe hooks as the DDNN config.
_base_ = ['mmpretrain::swin_transformer/swin-small_16xb64_in1k.py']

# a NaN loss stops the run (same optimizer, arguments and clip_grad)
optim_wrapper = dict(type='mmekd.SafeOptimWrapper')
default_hooks = dict(checkpoint=dict(type='mmekd.AtomicCheckpointHook'),
                     exact_resume=dict(type='mmekd.ExactResumeHook'),
                     preemption=dict(type='mmekd.PreemptionCheckpointHook'))

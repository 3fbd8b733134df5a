# Baseline for the DDNN comparison: ConvNeXt-S [3,3,27,3] (the full net of
# ddnn_convnext-small_in1k.py) trained alone: MMPretrain's own
# convnext-small_32xb128_in1k recipe (drop path 0.4, EMAHook), with the
# same optimizer wrapper and crash-safe hooks as the DDNN config.
_base_ = ['mmpretrain::convnext/convnext-small_32xb128_in1k.py']

# a NaN loss stops the run (same optimizer, arguments and clip_grad)
optim_wrapper = dict(type='mmekd.SafeOptimWrapper')
default_hooks = dict(checkpoint=dict(type='mmekd.AtomicCheckpointHook'),
                     exact_resume=dict(type='mmekd.ExactResumeHook'),
                     preemption=dict(type='mmekd.PreemptionCheckpointHook'))

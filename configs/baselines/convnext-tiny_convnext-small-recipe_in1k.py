# Baseline for the DDNN comparison: ConvNeXt-T [3,3,9,3] (sub0 of
# ddnn_convnext-small_in1k.py) trained alone with the DDNN config's recipe,
# MMPretrain's convnext-small_32xb128_in1k: drop path 0.4 spread over
# ConvNeXt-T's own 18 blocks, as the DDNN's sub0 gets it
# (drop_path='per_net'; ConvNeXt-T's own recipe uses 0.1), EMAHook; the same
# optimizer wrapper and crash-safe hooks.
_base_ = ['convnext-small_convnext-small-recipe_in1k.py']

model = dict(backbone=dict(arch='tiny'))

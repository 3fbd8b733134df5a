# Baseline for the DDNN comparison: Swin-T [2,2,6,2] (sub0 of
# ddnn_swin-small_in1k.py) trained alone with the DDNN config's recipe,
# MMPretrain's swin-small_16xb64_in1k: drop path 0.3 spread over Swin-T's
# own 12 blocks, as the DDNN's sub0 gets it (drop_path='per_net'; Swin-T's
# own recipe uses 0.2), clip_grad max_norm 5; the same optimizer wrapper and
# crash-safe hooks.
_base_ = ['swin-small_swin-small-recipe_in1k.py']

model = dict(backbone=dict(arch='tiny'))

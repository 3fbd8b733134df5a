# Baseline for the DDNN comparison: a 6-layer DeiT-S (ViT, 384 dims, 6
# heads; sub0 of ddnn_deit-small_in1k.py, no stock arch of this depth)
# trained alone with the DDNN config's recipe, MMPretrain's
# deit-small_4xb256_in1k (no drop path, clip_grad max_norm 5); the same
# optimizer wrapper and crash-safe hooks.
_base_ = ['deit-small_deit-small-recipe_in1k.py']

model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=384,
            num_layers=6,
            num_heads=6,
            feedforward_channels=1536)))

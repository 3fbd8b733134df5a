# Baseline for the DDNN comparison: a 9-layer DeiT-S (sub1 of
# ddnn_deit-small_in1k.py): vit-6l_deit-small-recipe_in1k.py with 9 layers.
_base_ = ['vit-6l_deit-small-recipe_in1k.py']

model = dict(backbone=dict(arch=dict(num_layers=9)))

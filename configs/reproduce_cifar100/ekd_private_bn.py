# Lever row (docs/levers.md): every sub-net with its own BatchNorm weights
# and statistics.
_base_ = ['../ddnn_r34_cifar100_fastdata.py']
model = dict(backbone=dict(norm_sharing='private'))

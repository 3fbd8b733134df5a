# Lever row (docs/levers.md): the sub-nets learn from distillation only.
_base_ = ['../ddnn_r34_cifar100_fastdata.py']
model = dict(sub_ce_weight=0.0)

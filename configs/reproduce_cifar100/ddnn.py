# Reproduction row: DDNN without distillation (cross-entropy only).
_base_ = ['../ddnn_r34_cifar100_fastdata.py']
model = dict(kl_loss=None, at_loss=None)

# Reproduction row: DDNN with attention distillation only.
_base_ = ['../ddnn_r34_cifar100_fastdata.py']
model = dict(kl_loss=None)

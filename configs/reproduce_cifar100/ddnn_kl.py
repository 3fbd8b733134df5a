# Reproduction row: DDNN with KL distillation only.
_base_ = ['../ddnn_r34_cifar100_fastdata.py']
model = dict(at_loss=None)

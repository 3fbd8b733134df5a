# Lever row (docs/levers.md): KL at temperature 1.
_base_ = ['../ddnn_r34_cifar100_fastdata.py']
model = dict(kl_loss=dict(tau=1.0))

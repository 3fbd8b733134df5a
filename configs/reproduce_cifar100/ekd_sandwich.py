# Lever row (docs/levers.md): two intermediate nets; each step trains the
# full net, ResNet-18 and one of them (drawn from the seed and iteration).
_base_ = ['../ddnn_r34_cifar100_fastdata.py']
model = dict(
    backbone=dict(sub_stage_blocks=[[2, 2, 2, 2], [2, 3, 4, 2], [3, 3, 5, 3]]),
    train_nets='sandwich_random')

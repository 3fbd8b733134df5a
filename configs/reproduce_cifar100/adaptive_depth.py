# Lever row (docs/levers.md): the levers combined as Adaptive Depth
# Networks do: sub-net [2,2,3,2], private BatchNorm, sandwich steps, the
# sub-net on distillation only, half-weighted full-net CE and KL at T=1.
_base_ = ['../ddnn_r34_cifar100_fastdata.py']
model = dict(
    backbone=dict(sub_stage_blocks=[[2, 2, 3, 2]], norm_sharing='private'),
    train_nets='sandwich',
    sub_ce_weight=0.0,
    full_loss_weight=0.5,
    kl_loss=dict(tau=1.0, loss_weight=0.5),
    at_loss=None)

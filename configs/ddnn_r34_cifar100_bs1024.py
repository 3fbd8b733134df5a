# DDNN + EKD on CIFAR-100 (as ddnn_r34_cifar100_fastdata.py: in-memory
# batches, augmentation on the device) at batch 1024 per GPU, for GPUs that
# batch 128 leaves idle. See docs/large_batch.md.
#
# - Linear LR scaling from the recipe's batch 128 (Goyal et al., 2017):
#   auto_scale_lr is enabled, so the Runner multiplies the LR by
#   (GPUs x batch per GPU) / 128: lr 0.1 -> 0.8 on one GPU at 1024, 0.4 at
#   512 (--cfg-options train_dataloader.batch_size=512).
# - Linear warm-up over the first 5 epochs (per iteration) from the batch-128
#   LR (0.8 x 0.125 = 0.1 at iteration 0) to the scaled LR (0.8, reached at
#   the last warm-up iteration), then the recipe's step schedule (x0.2) at
#   the recipe's epochs 60/120/160 of 200 (the milestones of a scheduler
#   count from its `begin`, hence 55/115/155 from epoch 5).
# - Everything else is the recipe's: SGD momentum 0.9, wd 5e-4, 200 epochs.
#
# Measured here (CPU only): the config builds, the LRs above
# (tests/test_configs/test_large_batch.py), a few iterations at batch 512
# with a tiny net, and a CPU proxy on the digits demo (docs/large_batch.md),
# where the same rule (LR x8 at batch 512 + warm-up) did NOT keep the
# batch-64 accuracy.
# NOT measured: accuracy on CIFAR-100 at batch 512/1024 on a GPU (whether it
# matches the batch-128 recipe), nor its speed.
_base_ = ['./ddnn_r34_cifar100_fastdata.py']

train_dataloader = dict(batch_size=1024)
auto_scale_lr = dict(base_batch_size=128, enable=True)
warmup_epochs = 5
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=128 / 1024,  # the batch-128 LR at iteration 0
        end_factor=1.0,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='MultiStepLR',
        by_epoch=True,
        begin=warmup_epochs,
        end=200,
        milestones=[60 - warmup_epochs, 120 - warmup_epochs,
                    160 - warmup_epochs],
        gamma=0.2),
]

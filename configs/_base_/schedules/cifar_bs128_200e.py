# CIFAR recipe (MMPretrain's resnet50_8xb16_cifar100): SGD 0.1, momentum
# 0.9, wd 5e-4, batch 128, 200 epochs, lr x0.2 at epochs 60/120/160.
optim_wrapper = dict(
    type='mmekd.SafeOptimWrapper',  # stops (or skips) on a NaN/inf loss
    # checked on the device where the optimizer is fused (no host sync),
    # reported at the next log line; check='host' checks every iteration
    check='device',
    # fused SGD (one kernel for all parameters) where the device has it,
    # else foreach; optimizer.fused / optimizer.foreach override
    constructor='mmekd.FusedOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[60, 120, 160], gamma=0.2)
train_cfg = dict(by_epoch=True, max_epochs=200, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=128)

# Schedule of the family CPU demos on the digits (ConvNeXt, Swin, ViT):
# AdamW without decay on norms and biases, a 1-epoch linear warm-up, then a
# cosine schedule to the last epoch (its end follows train_cfg.max_epochs).
optim_wrapper = dict(
    type='mmekd.SafeOptimWrapper',  # stops on a NaN/inf loss
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1),
]
train_cfg = dict(by_epoch=True, max_epochs=12, val_interval=4)
val_cfg = dict()
test_cfg = dict()

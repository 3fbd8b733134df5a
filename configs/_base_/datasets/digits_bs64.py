# scikit-learn's handwritten digits (real 8x8 scans, shipped with the
# package: no download), upsampled to 16x16. 1,442 train / 355 val images.
dataset_type = 'mmekd.Digits'
data_preprocessor = dict(
    num_classes=10, mean=[76.0] * 3, std=[96.0] * 3, to_rgb=False)

train_pipeline = [
    dict(type='Resize', scale=(16, 16), interpolation='bilinear'),
    dict(type='RandomCrop', crop_size=16, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=(16, 16), interpolation='bilinear'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type=dataset_type, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type=dataset_type, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

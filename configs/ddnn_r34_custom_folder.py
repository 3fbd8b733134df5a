# DDNN + EKD on your own images in ImageNet-style class folders (MMPretrain's
# CustomDataset: the class names are the sub-folder names, sorted):
#   $DATA_ROOT/train/<class>/*.jpg|png...   $DATA_ROOT/val/<class>/*...
# ResNet-34 [3,4,6,3] containing ResNet-18 [2,2,2,2], 224x224 ImageNet
# pipeline and recipe, one GPU x 32 images (lr scaled from 0.1 at 256).
#   DATA_ROOT=/path/to/data NUM_CLASSES=N python tools/train.py \
#       configs/ddnn_r34_custom_folder.py
# Start from ImageNet weights: docs/pretrained.md; the whole recipe:
# docs/custom_data.md.
_base_ = ['ddnn_r34_imagenet.py']

data_root = '{{$DATA_ROOT:data/custom}}'
num_classes = {{'$NUM_CLASSES:10'}}

data_preprocessor = dict(num_classes=num_classes)
model = dict(head=dict(num_classes=num_classes))

# The base config's ImageNet dataset, replaced by the folders.
folder = dict(_delete_=True, type='CustomDataset', data_root=data_root)
train_dataloader = dict(dataset=dict(
    folder, data_prefix='train', pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(dataset=dict(
    folder, data_prefix='val', pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
# Top-5 only where there are more than 5 classes.
val_evaluator = dict(topk=(1, 5) if num_classes > 5 else (1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=0.1 * 32 / 256))
auto_scale_lr = dict(base_batch_size=32)

# MMPretrain's own CIFAR-10 ResNet-34 recipe (resnet34_8xb16_cifar10: model,
# data pipeline, schedule, runtime) turned into a DDNN + EKD run: ResNet-34
# [3,4,6,3] containing ResNet-18 [2,2,2,2], trained together with the default
# distillation (KL + attention). Only the lines below differ from the stock
# config. CIFAR-10 is read from local files in the standard
# `cifar-10-batches-py/` layout (data/cifar10 or $CIFAR10_ROOT), no download.
_base_ = ['mmpretrain::resnet/resnet34_8xb16_cifar10.py']

model = dict(
    type='mmekd.DDNNClassifier',
    backbone=dict(
        type='mmekd.DepthDynamicResNetCIFAR',
        sub_stage_blocks=[[2, 2, 2, 2]],
        out_indices=(0, 1, 2, 3)),  # attention distillation on every stage
    head=dict(type='mmekd.MultiNetClsHead'))
# several backward passes per iteration (the memory-efficient step) count
# as one, and a NaN loss stops the run
optim_wrapper = dict(type='mmekd.SafeOptimWrapper')
# under torchrun: the same memory-efficient step, gradients averaged once
model_wrapper_cfg = dict(type='mmekd.DDNNDistributedDataParallel')

data_root = '{{$CIFAR10_ROOT:data/cifar10}}'
train_dataloader = dict(dataset=dict(type='mmekd.CIFAR10', data_root=data_root))
val_dataloader = dict(dataset=dict(type='mmekd.CIFAR10', data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, ))
test_evaluator = val_evaluator

# mmekd's crash-safe checkpoints (same arguments as the stock CheckpointHook),
# exact mid-epoch resume and a checkpoint on SIGTERM, as in
# configs/_base_/default_runtime.py.
default_hooks = dict(checkpoint=dict(type='mmekd.AtomicCheckpointHook'),
                     exact_resume=dict(type='mmekd.ExactResumeHook'),
                     preemption=dict(type='mmekd.PreemptionCheckpointHook'))

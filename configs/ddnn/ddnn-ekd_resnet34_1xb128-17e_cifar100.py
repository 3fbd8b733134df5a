# ddnn-ekd_resnet34_1xb128-17e_cifar100: the full net (resnet34) of the DDNN
# of ../ddnn_r34_cifar100.py, trained with the recipe of the measured
# CIFAR-100 comparison (docs/results.md, "CIFAR-100 on one H100"): 17 epochs, cosine
# lr, the fast data path (../ddnn_r34_cifar100_fastdata.py), validation = the
# last 50 training images of every class. The measured run trained in bf16
# mixed precision: tools/train.py CONFIG --amp --cfg-options
# optim_wrapper.dtype=bfloat16. Predicts with that net only; one checkpoint
# holds every net (tools/export_subnet.py deploys one alone, docs/deploy.md).
# The measured run shared BatchNorm statistics between the nets (the default
# then), so this entry keeps norm_sharing='shared'; training is the same with the
# default 'stats' (per-net statistics), only the statistics tested differ.
_base_ = ['../ddnn_r34_cifar100_fastdata.py']
model = dict(
    backbone=dict(norm_sharing='shared'), predict_net='full',
    eval_all_nets=False)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
param_scheduler = dict(
    _delete_=True,
    type='CosineAnnealingLR',
    by_epoch=True,
    begin=0,
    end=17,
    T_max=17)
train_cfg = dict(max_epochs=17, val_interval=17)

# ddnn-ekd_resnet50-sub1-resnet44_1xb128_cifar100: sub-net 'sub1' (resnet44) of the DDNN model of ../ddnn_r50_cifar100.py,
# predicting with that net only. Weights: a checkpoint of ../ddnn_r50_cifar100.py (one
# checkpoint holds every net); to deploy the net alone, use
# tools/export_subnet.py (docs/deploy.md).
_base_ = ['../ddnn_r50_cifar100.py']
model = dict(predict_net='sub1', eval_all_nets=False)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

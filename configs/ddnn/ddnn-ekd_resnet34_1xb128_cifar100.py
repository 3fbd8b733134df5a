# ddnn-ekd_resnet34_1xb128_cifar100: the full net (resnet34) of the DDNN model of ../ddnn_r34_cifar100.py,
# predicting with that net only. Weights: a checkpoint of ../ddnn_r34_cifar100.py (one
# checkpoint holds every net); to deploy the net alone, use
# tools/export_subnet.py (docs/deploy.md).
_base_ = ['../ddnn_r34_cifar100.py']
model = dict(predict_net='full', eval_all_nets=False)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

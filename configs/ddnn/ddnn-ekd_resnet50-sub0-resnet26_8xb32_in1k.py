# ddnn-ekd_resnet50-sub0-resnet26_8xb32_in1k: sub-net 'sub0' (resnet26) of the DDNN model of ../ddnn_r50_imagenet.py,
# predicting with that net only. Weights: a checkpoint of ../ddnn_r50_imagenet.py (one
# checkpoint holds every net); to deploy the net alone, use
# tools/export_subnet.py (docs/deploy.md).
_base_ = ['../ddnn_r50_imagenet.py']
model = dict(predict_net='sub0', eval_all_nets=False)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

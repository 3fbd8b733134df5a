# ddnn-ekd_convnext-small-sub0-convnext-tiny_32xb128_in1k: sub-net 'sub0' (convnext-tiny) of the DDNN model of ../ddnn_convnext-small_in1k.py,
# predicting with that net only. Weights: a checkpoint of ../ddnn_convnext-small_in1k.py (one
# checkpoint holds every net); to deploy the net alone, use
# tools/export_subnet.py (docs/deploy.md).
_base_ = ['../ddnn_convnext-small_in1k.py']
model = dict(predict_net='sub0', eval_all_nets=False)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

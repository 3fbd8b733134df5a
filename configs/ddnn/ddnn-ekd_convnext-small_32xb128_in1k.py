# ddnn-ekd_convnext-small_32xb128_in1k: the full net (convnext-small) of the DDNN model of ../ddnn_convnext-small_in1k.py,
# predicting with that net only. Weights: a checkpoint of ../ddnn_convnext-small_in1k.py (one
# checkpoint holds every net); to deploy the net alone, use
# tools/export_subnet.py (docs/deploy.md).
_base_ = ['../ddnn_convnext-small_in1k.py']
model = dict(predict_net='full', eval_all_nets=False)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

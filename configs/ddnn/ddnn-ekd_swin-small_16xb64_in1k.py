# ddnn-ekd_swin-small_16xb64_in1k: the full net (swin-small) of the DDNN model of ../ddnn_swin-small_in1k.py,
# predicting with that net only. Weights: a checkpoint of ../ddnn_swin-small_in1k.py (one
# checkpoint holds every net); to deploy the net alone, use
# tools/export_subnet.py (docs/deploy.md).
_base_ = ['../ddnn_swin-small_in1k.py']
model = dict(predict_net='full', eval_all_nets=False)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

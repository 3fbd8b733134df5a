# ddnn-ekd_resnet34-w16_1xb64_digits: the full net (resnet34) of the DDNN model of ../ddnn_demo_digits.py,
# predicting with that net only. Weights: a checkpoint of ../ddnn_demo_digits.py (one
# checkpoint holds every net); to deploy the net alone, use
# tools/export_subnet.py (docs/deploy.md).
_base_ = ['../ddnn_demo_digits.py']
model = dict(predict_net='full', eval_all_nets=False)
val_evaluator = dict(type='Accuracy', topk=(1,))
test_evaluator = val_evaluator

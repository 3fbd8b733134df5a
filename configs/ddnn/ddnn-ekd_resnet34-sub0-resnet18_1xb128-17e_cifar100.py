# ddnn-ekd_resnet34-sub0-resnet18_1xb128-17e_cifar100: sub-net 'sub0'
# (resnet18) of the DDNN of ../ddnn_r34_cifar100.py, trained with the recipe
# of the measured CIFAR-100 comparison (see
# ddnn-ekd_resnet34_1xb128-17e_cifar100.py; one checkpoint holds every net).
# Predicts with that net only.
_base_ = ['./ddnn-ekd_resnet34_1xb128-17e_cifar100.py']
model = dict(predict_net='sub0')

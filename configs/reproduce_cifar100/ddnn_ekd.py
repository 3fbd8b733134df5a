# The claim row of the CIFAR-100 reproduction (tools/reproduce_cifar100.py):
# DDNN + EKD, CIFAR ResNet-34 [3,4,6,3] containing ResNet-18 [2,2,2,2], the
# configs' defaults, on the fast data path. Every row is compared with its
# nets trained alone (mmekd.apis.alone_config); the reproduction's recipe
# (epochs, schedule, split, seed) is merged in by the tool.
_base_ = ['../ddnn_r34_cifar100_fastdata.py']

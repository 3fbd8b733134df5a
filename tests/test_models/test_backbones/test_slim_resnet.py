# Copyright (c) mmekd contributors. All rights reserved.
import pytest
import torch
from mmpretrain.models import ResNet, ResNet_CIFAR

from mmekd.models import SlimResNet, SlimResNetCIFAR


def test_slim_resnet_bottleneck_non_uniform_widths():
    # s=0.8 slim ResNet-50: widths a stock ResNet cannot express.
    mid, out = (52, 103, 205, 410), (205, 410, 820, 1639)
    net = SlimResNet(50, stem_channels=52, mid_channels=mid,
                     out_channels=out, out_indices=(0, 1, 2, 3)).eval()
    assert net.conv1.weight.shape == (52, 3, 7, 7)
    assert net.layer1[0].conv1.weight.shape == (52, 52, 1, 1)
    assert net.layer1[0].conv3.weight.shape == (205, 52, 1, 1)
    assert net.layer1[0].downsample[0].weight.shape == (205, 52, 1, 1)
    assert net.layer2[0].conv2.weight.shape == (103, 103, 3, 3)
    assert net.layer2[1].conv1.weight.shape == (103, 410, 1, 1)
    assert net.layer4[2].bn3.num_features == 1639
    outs = net(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == list(out)
    assert net.feat_dim == 1639


def test_slim_resnet_same_names_as_resnet():
    # Same parameter names (so dense weights slice into it) and, at full
    # width, the same function as mmpretrain's ResNet.
    for dense, slim_cls in ((ResNet(18), SlimResNet),
                            (ResNet_CIFAR(50), SlimResNetCIFAR)):
        stages = [getattr(dense, n)[0] for n in dense.res_layers]
        slim = slim_cls(
            dense.depth, dense.stem_channels,
            [b.mid_channels for b in stages],
            [b.out_channels for b in stages])
        assert slim.state_dict().keys() == dense.state_dict().keys()
        slim.load_state_dict(dense.state_dict())
        dense.eval()  # ResNet.train() returns None: no chaining
        x = torch.rand(2, 3, 32, 32)
        torch.testing.assert_close(slim.eval()(x)[-1], dense(x)[-1])


def test_slim_resnet_cifar_stem():
    net = SlimResNetCIFAR(18, 32, (32, 64, 128, 256), (32, 64, 128, 256))
    assert net.conv1.weight.shape == (32, 3, 3, 3)
    assert net.eval()(torch.rand(1, 3, 32, 32))[-1].shape == (1, 256, 4, 4)


def test_slim_resnet_invalid():
    with pytest.raises(ValueError, match='BasicBlock'):
        SlimResNet(18, 32, (16, 64, 128, 256), (32, 64, 128, 256))
    with pytest.raises(ValueError, match='one width per stage'):
        SlimResNet(18, 32, (32, 64), (32, 64))
    with pytest.raises(ValueError, match='base_channels'):
        SlimResNet(18, 32, (32, ) * 4, (32, ) * 4, base_channels=16)
    with pytest.raises(ValueError, match='depth'):
        SlimResNet(20, 32, (32, ) * 4, (32, ) * 4)

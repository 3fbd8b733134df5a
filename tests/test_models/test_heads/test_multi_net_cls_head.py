# Copyright (c) mmekd contributors. All rights reserved.
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.structures import DataSample
from torch.testing import assert_close

from mmekd.models import MultiNetClsHead
from mmekd.registry import MODELS

NETS = ('full', 'sub0', 'sub1')


def _head(**kwargs):
    torch.manual_seed(0)
    return MultiNetClsHead(
        num_classes=5, in_channels=4, net_names=NETS, **kwargs)


def test_build_from_registry():
    head = MODELS.build(
        dict(
            type='mmekd.MultiNetClsHead',
            num_classes=5,
            in_channels=4,
            net_names=NETS))
    assert isinstance(head, MultiNetClsHead)
    assert head.net_names == list(NETS)


@pytest.mark.parametrize('net_names', [(), ('sub0', 'full')])
def test_net_names_must_start_with_full(net_names):
    with pytest.raises(ValueError, match="net_names must start with 'full'"):
        MultiNetClsHead(num_classes=5, in_channels=4, net_names=net_names)


def test_shared_fc():
    head = _head()
    assert not hasattr(head, 'sub_fcs')
    for net in NETS:
        assert head.classifier(net) is head.fc
    x = torch.randn(3, 4)
    expected = x @ head.fc.weight.T + head.fc.bias
    for net in NETS:
        assert_close(head((x, ), net=net), expected)
    assert_close(head((torch.randn(3, 4), x)), expected)  # last stage only
    with pytest.raises(KeyError, match="unknown net 'sub2'"):
        head((x, ), net='sub2')


def test_private_fc():
    head = _head(private_fc=True)
    assert list(head.sub_fcs) == ['sub0', 'sub1']
    assert head.classifier('full') is head.fc
    assert head.classifier('sub1') is head.sub_fcs['sub1']
    x = torch.randn(3, 4)
    outs = {net: head((x, ), net=net) for net in NETS}
    for net in NETS:
        fc = head.classifier(net)
        assert_close(outs[net], x @ fc.weight.T + fc.bias)
    assert not torch.allclose(outs['full'], outs['sub0'])
    # Gradients of one net's scores reach only its classifier.
    outs['sub0'].sum().backward()
    assert head.fc.weight.grad is None
    assert head.sub_fcs['sub1'].weight.grad is None
    assert_close(head.sub_fcs['sub0'].weight.grad,
                 x.sum(0, keepdim=True).expand(5, 4))


def test_private_fc_loads_plain_classifier_weights():
    plain = LinearClsHead(num_classes=5, in_channels=4)
    torch.nn.init.normal_(plain.fc.weight)
    torch.nn.init.normal_(plain.fc.bias)
    head = _head(private_fc=True)
    head.load_state_dict(plain.state_dict(), strict=True)
    for net in NETS:
        assert_close(head.classifier(net).weight, plain.fc.weight)
        assert_close(head.classifier(net).bias, plain.fc.bias)
    # Its own checkpoint keeps the private classifiers apart.
    with torch.no_grad():
        head.sub_fcs['sub0'].weight.add_(1)
    other = _head(private_fc=True)
    other.load_state_dict(head.state_dict(), strict=True)
    assert_close(other.state_dict(), head.state_dict())
    assert not torch.allclose(other.sub_fcs['sub0'].weight, other.fc.weight)


def test_loss_and_predictions():
    head = _head(loss=dict(type='CrossEntropyLoss', loss_weight=0.5))
    scores = torch.randn(3, 5)
    samples = [DataSample().set_gt_label(i) for i in (4, 0, 2)]
    labels = torch.tensor([4, 0, 2])
    assert_close(
        head.loss_by_net(scores, samples),
        0.5 * F.cross_entropy(scores, labels))
    preds = head.predict_scores(scores, samples)
    assert preds[0] is samples[0]
    for pred, score in zip(preds, scores):
        assert_close(pred.pred_score, score.softmax(0))
        assert pred.pred_label.item() == score.argmax().item()

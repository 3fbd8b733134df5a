# Copyright (c) mmekd contributors. All rights reserved.
import pytest
import torch
from mmpretrain.structures import DataSample

from mmekd.evaluation import MultiNetAccuracy
from mmekd.models import DDNNClassifier
from mmekd.registry import METRICS


def _sample(label, net_scores, net_names=('full', 'sub0')):
    sample = DataSample().set_gt_label(label)
    sample.set_field(torch.tensor(net_scores, dtype=torch.float32),
                     'net_scores')
    sample.set_metainfo(dict(net_names=tuple(net_names)))
    return sample.to_dict()  # as mmengine's Evaluator hands them over


def test_hand_built_scores():
    # 6 classes; per sample one row per net. Ranking of the classes:
    #   sample 0 (label 2): full 2 > ...          sub0 0 > 1 > 2 > ...
    #   sample 1 (label 5): full 5 > ...          sub0 0 > 1 > 2 > 3 > 4 > 5
    #   sample 2 (label 0): full 1 > 0 > ...      sub0 0 > ...
    #   sample 3 (label 3): full 0>1>2>4>5>3      sub0 3 > ...
    rows = [
        (2, [[0., 0., 9., 0., 0., 0.], [6., 5., 4., 3., 2., 1.]]),
        (5, [[0., 0., 0., 0., 0., 9.], [6., 5., 4., 3., 2., 1.]]),
        (0, [[5., 9., 1., 1., 1., 1.], [9., 0., 0., 0., 0., 0.]]),
        (3, [[9., 8., 7., 1., 6., 5.], [0., 0., 0., 9., 0., 0.]]),
    ]
    metric = METRICS.build(dict(type='mmekd.MultiNetAccuracy', topk=(1, 5)))
    metric.process(None, [_sample(label, s) for label, s in rows[:2]])
    metric.process(None, [_sample(label, s) for label, s in rows[2:]])
    results = metric.evaluate(size=4)
    assert results == pytest.approx({
        'full/top1': 50.0,  # samples 0, 1
        'full/top5': 75.0,  # not sample 3 (label ranked 6th)
        'sub0/top1': 50.0,  # samples 2, 3
        'sub0/top5': 75.0,  # not sample 1
    })


def test_prefix_and_int_topk():
    metric = MultiNetAccuracy(topk=1, prefix='val')
    metric.process(None, [
        _sample(1, [[0., 1.], [1., 0.], [0., 1.]], ('full', 'sub0', 'sub1'))
    ])
    assert metric.evaluate(1) == {
        'val/full/top1': 100.0,
        'val/sub0/top1': 0.0,
        'val/sub1/top1': 100.0,
    }


def test_invalid_topk_and_missing_scores():
    for topk in ((), (0, ), (1.5, )):
        with pytest.raises(ValueError, match='topk must be positive'):
            MultiNetAccuracy(topk=topk)
    metric = MultiNetAccuracy()
    plain = DataSample().set_gt_label(0).set_pred_score(torch.ones(3))
    with pytest.raises(KeyError, match='net_scores'):
        metric.process(None, [plain.to_dict()])


def test_end_to_end_predict_to_metric():
    model = DDNNClassifier(
        backbone=dict(
            type='mmekd.DepthDynamicResNetCIFAR',
            depth=34,
            sub_depths=[[2, 2, 2, 2]],
            base_channels=8,
            stem_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='mmekd.MultiNetClsHead',
            num_classes=10,
            in_channels=64,
            private_fc=True))
    # Hand-set classifiers that ignore the features: the full net ranks the
    # classes 0 > 1 > ... > 9, sub0 ranks them 9 > 8 > ... > 0.
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.copy_(-torch.arange(10.))
        model.head.sub_fcs['sub0'].weight.zero_()
        model.head.sub_fcs['sub0'].bias.copy_(torch.arange(10.))
    model.eval()
    labels = [0, 3, 4, 9]
    samples = [DataSample().set_gt_label(i) for i in labels]
    with torch.no_grad():
        preds = model(torch.randn(4, 3, 8, 8), samples, mode='predict')
    assert [p.pred_label.item() for p in preds] == [0, 0, 0, 0]
    metric = MultiNetAccuracy(topk=(1, 5))
    metric.process(None, [p.to_dict() for p in preds])
    assert metric.evaluate(4) == pytest.approx({
        'full/top1': 25.0,  # label 0
        'full/top5': 75.0,  # labels 0, 3, 4
        'sub0/top1': 25.0,  # label 9
        'sub0/top5': 25.0,  # label 9 (top5 is 9..5)
    })


def test_mixed_net_sets_are_refused():
    import torch as _torch
    from mmekd.evaluation import MultiNetAccuracy as _Metric
    metric = _Metric(topk=(1, ))
    results = [
        dict(net_names=('full', 'sub0'), scores=_torch.eye(2),
             label=_torch.tensor([0])),
        dict(net_names=('full', ), scores=_torch.eye(2)[:1],
             label=_torch.tensor([0])),
    ]
    with pytest.raises(ValueError, match='different sets of nets'):
        metric.compute_metrics(results)

# Copyright (c) mmekd contributors. All rights reserved.
import copy

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.structures import DataSample
from torch.testing import assert_close

from mmekd.models import DDNNClassifier
from mmekd.registry import MODELS

# CIFAR ResNet-34 [3, 4, 6, 3] with the ResNet-18 [2, 2, 2, 2] sub-net;
# stages have 8, 16, 32, 64 channels.
BACKBONE = dict(
    type='mmekd.DepthDynamicResNetCIFAR',
    depth=34,
    sub_depths=[[2, 2, 2, 2]],
    base_channels=8,
    stem_channels=8,
    out_indices=(0, 1, 2, 3))
NUM_CLASSES = 10


def build_model(randomize_norms=None, backbone=None, head=None, **kwargs):
    cfg = dict(
        backbone=dict(BACKBONE, **(backbone or {})),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='mmekd.MultiNetClsHead',
            num_classes=NUM_CLASSES,
            in_channels=64,
            **(head or {})))
    cfg.update(kwargs)
    torch.manual_seed(0)
    model = DDNNClassifier(**cfg)
    if randomize_norms is not None:
        randomize_norms(model)
    return model


def batch(n=4, size=8):
    torch.manual_seed(1)
    inputs = torch.randn(n, 3, size, size)
    labels = torch.arange(n) % NUM_CLASSES
    samples = [DataSample().set_gt_label(int(i)) for i in labels]
    return inputs, samples, labels


def _attention(feat):
    a = feat.pow(2).mean(1).flatten(1)
    return a / a.norm(dim=1, keepdim=True)


def test_build_from_registry():
    model = MODELS.build(
        dict(
            type='mmekd.DDNNClassifier',
            backbone=BACKBONE,
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='mmekd.MultiNetClsHead',
                num_classes=NUM_CLASSES,
                in_channels=64)))
    assert isinstance(model, DDNNClassifier)
    assert model.net_names == ['full', 'sub0']
    assert model.head.net_names == ['full', 'sub0']
    assert model.ekd.at_stages == (0, 1, 2, 3)
    assert model.predict_net == 'full'


def test_loss_values(randomize_norms):
    model = build_model(
        randomize_norms,
        kl_loss=dict(type='mmekd.KLDivLoss', tau=4.0, loss_weight=1.0),
        at_loss=dict(
            type='mmekd.AttentionTransferLoss',
            p=2.0,
            mode='activation',
            loss_weight=1000.0))
    model.train()
    inputs, samples, labels = batch()
    losses = model.loss(inputs, samples)
    assert set(losses) == {
        'loss_ce_full', 'loss_ce_sub0', 'loss_kl_sub0', 'loss_at_sub0'
    }

    # By hand from the backbone (train mode: same batch statistics).
    feats = dict(zip(['full', 'sub0'], model.backbone.forward_nets(inputs)))
    fc = model.head.fc
    logits = {
        net: f[-1].mean((2, 3)) @ fc.weight.T + fc.bias
        for net, f in feats.items()
    }
    for net in ('full', 'sub0'):
        assert_close(losses[f'loss_ce_{net}'],
                     F.cross_entropy(logits[net], labels))
    tau = 4.0
    p_t = (logits['full'] / tau).softmax(1)
    kl = (p_t * (p_t.log() - (logits['sub0'] / tau).log_softmax(1))).sum(1)
    assert_close(losses['loss_kl_sub0'], tau**2 * kl.mean())
    at = sum(((_attention(s) - _attention(t))**2).mean()
             for s, t in zip(feats['sub0'], feats['full']))
    assert_close(losses['loss_at_sub0'], 1000 * at)
    assert losses['loss_kl_sub0'] > 0 and losses['loss_at_sub0'] > 0


def test_at_stages_select_pairs(randomize_norms):
    model = build_model(
        randomize_norms,
        at_stages=(1, 3),
        kl_loss=None,
        at_loss=dict(type='mmekd.AttentionTransferLoss', loss_weight=1.0))
    model.eval()
    inputs, samples, _ = batch()
    losses = model.loss(inputs, samples)
    assert set(losses) == {'loss_ce_full', 'loss_ce_sub0', 'loss_at_sub0'}
    full, sub0 = model.backbone.forward_nets(inputs)
    at = sum(((_attention(sub0[s]) - _attention(full[s]))**2).mean()
             for s in (1, 3))
    assert_close(losses['loss_at_sub0'], at)


def test_without_distillation_only_ce(randomize_norms):
    model = build_model(randomize_norms, kl_loss=None, at_loss=None)
    assert model.ekd.kl_loss is None and model.ekd.at_loss is None
    inputs, samples, _ = batch()
    losses = model.loss(inputs, samples)
    assert set(losses) == {'loss_ce_full', 'loss_ce_sub0'}
    with_ekd = build_model(randomize_norms).loss(inputs, samples)
    assert_close(losses['loss_ce_full'], with_ekd['loss_ce_full'])
    assert_close(losses['loss_ce_sub0'], with_ekd['loss_ce_sub0'])


# Parameters only the full net runs (the sub-net keeps blocks 0 and 1).
FULL_ONLY = ('backbone.layer1.2.', 'backbone.layer2.2.', 'backbone.layer2.3.',
             'backbone.layer3.5.', 'backbone.layer4.2.')
SHARED = ('backbone.conv1.', 'backbone.layer1.0.', 'backbone.layer4.1.')


def _grads(model, losses, keys):
    model.zero_grad(set_to_none=True)
    sum(losses[k] for k in keys).backward(retain_graph=True)
    return {n: p.grad for n, p in model.named_parameters()}


def _norm(grad):
    return 0. if grad is None else grad.abs().sum().item()


@pytest.mark.parametrize('private_norm', [False, 'stats', True])
def test_no_gradient_reaches_teacher(randomize_norms, private_norm):
    model = build_model(
        randomize_norms, backbone=dict(private_norm=private_norm))
    model.train()
    inputs, samples, _ = batch()
    losses = model.loss(inputs, samples)

    distill = _grads(model, losses, ['loss_kl_sub0', 'loss_at_sub0'])
    full_ce = _grads(model, losses, ['loss_ce_full'])
    sub_ce = _grads(model, losses, ['loss_ce_sub0'])
    full_only = [n for n in distill if n.startswith(FULL_ONLY)]
    assert full_only
    for name in full_only:
        assert _norm(distill[name]) == 0, name
        assert _norm(sub_ce[name]) == 0, name
        # ... though the full net's own loss trains them.
        if 'sub_norms' not in name:
            assert _norm(full_ce[name]) > 0, name
    # The students learn from the distillation terms.
    assert _norm(distill['backbone.layer1.0.conv1.weight']) > 0
    assert _norm(distill['backbone.layer4.1.conv2.weight']) > 0


def test_shared_weights_get_gradients_from_every_net(randomize_norms):
    model = build_model(randomize_norms)
    model.train()
    inputs, samples, _ = batch()
    losses = model.loss(inputs, samples)
    full_ce = _grads(model, losses, ['loss_ce_full'])
    sub_ce = _grads(model, losses, ['loss_ce_sub0'])
    both = _grads(model, losses, ['loss_ce_full', 'loss_ce_sub0'])
    shared = [
        n for n, p in model.named_parameters()
        if n.startswith(SHARED) and 'conv' in n
    ]
    assert shared
    for name in shared:
        assert _norm(full_ce[name]) > 0, name
        assert _norm(sub_ce[name]) > 0, name
        assert_close(
            both[name], full_ce[name] + sub_ce[name], rtol=1e-4, atol=1e-4)
    # The shared classifier too.
    assert _norm(sub_ce['head.fc.weight']) > 0
    assert _norm(full_ce['head.fc.weight']) > 0


def test_compute_losses_needs_teacher(randomize_norms):
    model = build_model(randomize_norms)
    inputs, samples, _ = batch()
    logits, feats = model.forward_nets(inputs, ['sub0'])
    with pytest.raises(ValueError, match='needs the full net'):
        model.compute_losses(logits, feats, samples)
    # Without distillation a single net is fine.
    no_ekd = build_model(randomize_norms, kl_loss=None, at_loss=None)
    logits, feats = no_ekd.forward_nets(inputs, ['sub0'])
    assert set(no_ekd.compute_losses(logits, feats,
                                     samples)) == {'loss_ce_sub0'}


def test_predict_and_tensor_modes(randomize_norms):
    model = build_model(randomize_norms, head=dict(private_fc=True))
    model.eval()
    inputs, samples, _ = batch()
    full, sub0 = model.backbone.forward_nets(inputs)
    expected = {
        'full': model.head.fc(full[-1].mean((2, 3))),
        'sub0': model.head.sub_fcs['sub0'](sub0[-1].mean((2, 3))),
    }
    assert not torch.allclose(expected['full'], expected['sub0'])

    assert_close(model(inputs, mode='tensor'), expected['full'])
    preds = model(inputs, copy.deepcopy(samples), mode='predict')
    for i, pred in enumerate(preds):
        assert pred.net_names == ('full', 'sub0')
        assert pred.net_scores.shape == (2, NUM_CLASSES)
        for j, net in enumerate(('full', 'sub0')):
            assert_close(pred.net_scores[j], expected[net][i].softmax(0))
        assert_close(pred.pred_score, expected['full'][i].softmax(0))
        assert pred.gt_label.item() == samples[i].gt_label.item()

    preds = model.predict(inputs, net='sub0')
    assert_close(
        torch.stack([p.pred_score for p in preds]),
        expected['sub0'].softmax(1))

    sub_model = build_model(
        randomize_norms,
        head=dict(private_fc=True),
        predict_net='sub0',
        eval_all_nets=False)
    sub_model.load_state_dict(model.state_dict())
    sub_model.eval()
    assert_close(sub_model(inputs), expected['sub0'])
    preds = sub_model.predict(inputs)
    assert 'net_scores' not in preds[0]
    assert_close(preds[0].pred_score, expected['sub0'][0].softmax(0))

    # extract_feat follows the chosen net.
    assert_close(
        model.extract_feat(inputs, stage='pre_logits', net='sub0'),
        sub0[-1].mean((2, 3)))
    assert_close(model.extract_feat(inputs, stage='backbone')[1], full[1])
    with pytest.raises(ValueError, match="stage must be 'backbone'"):
        model.extract_feat(inputs, stage='head')
    with pytest.raises(ValueError, match="unknown net 'sub3'"):
        model.predict(inputs, net='sub3')


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(at_stages=(0, 4)), ValueError,
     r'at_stages \(0, 4\): \[4\] are not stages of the backbone '
     r'\(0..3\)'),
    (dict(backbone=dict(out_indices=(0, 1, 2))), ValueError,
     r'backbone.out_indices \(0, 1, 2\) must contain the last stage \(3\)'),
    (dict(predict_net='sub1'), ValueError,
     r"predict_net must be one of \['full', 'sub0'\], got 'sub1'"),
    (dict(backbone=dict(type='ResNet_CIFAR', sub_depths=None)), TypeError,
     r'depth-dynamic backbone with forward_nets\(\).*got ResNet_CIFAR'),
    (dict(head=dict(type='LinearClsHead')), TypeError,
     r'head that classifies per net.*got LinearClsHead'),
    (dict(head=dict(net_names=['full', 'sub1'])), ValueError,
     r"head.net_names \['full', 'sub1'\] do not match the backbone's nets"),
    (dict(head=None), ValueError, 'needs a head config'),
])
def test_invalid_config(kwargs, error, match):
    kwargs = copy.deepcopy(kwargs)
    backbone = kwargs.pop('backbone', {})
    if backbone.get('type') == 'ResNet_CIFAR':
        backbone = dict(
            type='ResNet_CIFAR',
            depth=18,
            base_channels=8,
            out_indices=(0, 1, 2, 3))
    else:
        backbone = dict(BACKBONE, **backbone)
        if backbone['out_indices'] == (0, 1, 2, 3) and 'at_stages' in kwargs:
            backbone['out_indices'] = (2, 3)
    head = kwargs.pop('head', {})
    if head is not None:
        head = dict(
            dict(
                type='mmekd.MultiNetClsHead',
                num_classes=NUM_CLASSES,
                in_channels=64), **head)
        if head['type'] == 'LinearClsHead':
            head.pop('type')
            head = dict(head, type='LinearClsHead')
    with pytest.raises(error, match=match):
        DDNNClassifier(
            backbone=backbone,
            neck=dict(type='GlobalAveragePooling'),
            head=head,
            **kwargs)


def test_silent_misconfigurations_are_refused(tiny_ddnn_cfg):
    """Fields that would otherwise be ignored or coerced give clear errors."""
    from mmekd.registry import MODELS as _MODELS
    base = tiny_ddnn_cfg
    with pytest.raises(ValueError, match='at_stages is empty'):
        _MODELS.build(dict(base, at_stages=()))
    _MODELS.build(dict(base, at_stages=(), at_loss=None))  # explicit: fine
    bad = dict(base, backbone=dict(base['backbone'],
                                   sub_depths=[[[0], [0], [0], [0.0]]]))
    with pytest.raises(TypeError, match='must be integers'):
        _MODELS.build(bad)

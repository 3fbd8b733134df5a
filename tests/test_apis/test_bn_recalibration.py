# Copyright (c) mmekd contributors. All rights reserved.
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS
from torch.testing import assert_close

from mmekd.apis import build_model, export_subnet
from mmekd.models.utils import recalibrate_bn
from tiny_ddnn import randomize, write_config


def batches(n=3, size=16, bs=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        dict(inputs=[
            torch.randint(0, 256, (3, size, size), generator=gen,
                          dtype=torch.uint8) for _ in range(bs)
        ]) for _ in range(n)
    ]


def tiny(tmp_path, **kwargs):
    cfg = Config.fromfile(write_config(osp.join(tmp_path, 'c.py'), **kwargs))
    return randomize(build_model(cfg)), cfg


def norm_inputs(model, norm, data, net):
    """The inputs ``norm`` sees when ``net`` runs on each batch."""
    seen = []
    handle = norm.register_forward_hook(
        lambda m, args, out: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        for batch in data:
            x = model.data_preprocessor(batch, True)['inputs']
            model.forward_nets(x, [net])
    handle.remove()
    return seen


def test_exact_cumulative_average(tmp_path):
    model, _ = tiny(tmp_path)
    data = batches()
    bn = model.backbone.layer2[0].bn1
    # Features the norm sees depend on the earlier norms' statistics, which
    # recalibration changes too: record them in train-mode BN, as it runs.
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.train()
    feats = norm_inputs(ref, ref.backbone.layer2[0].bn1, data, 'sub1')
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)

    momentum = bn.momentum
    weights = {k: v.clone() for k, v in model.named_parameters()}
    assert recalibrate_bn(model, data, num_batches=3, net='sub1') == 3
    assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
    assert_close(bn.running_var, var, rtol=1e-5, atol=1e-5)
    assert int(bn.num_batches_tracked) == 3
    assert bn.momentum == momentum and not model.training
    assert not any(m.training for m in model.modules())
    for k, v in model.named_parameters():
        assert torch.equal(v, weights[k]), k


def test_short_dataloader_is_used_whole_and_reported(tmp_path):
    model, _ = tiny(tmp_path)
    data = batches(n=3)
    ref = copy.deepcopy(model)
    assert recalibrate_bn(ref, data, num_batches=3, net='sub0') == 3
    with pytest.warns(UserWarning, match=r'20 batches asked, but the '
                      r'dataloader has only 3; .* averaged over 3 batches'):
        used = recalibrate_bn(model, data, num_batches=20, net='sub0')
    assert used == 3
    bn = model.backbone.bn1
    assert int(bn.num_batches_tracked) == 3
    for k, v in ref.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_batches_are_prepared_as_in_training(tmp_path, monkeypatch):
    """Augmentation in the data preprocessor (mmekd.GPUAugmentPreprocessor
    of the fast data path) applies: the network was trained on statistics
    of augmented batches. (Clean batches cost a CIFAR-100 DDNN 2.4 points.)
    """
    model, _ = tiny(tmp_path)
    flags = []
    forward = model.data_preprocessor.forward

    def record(data, training=False):
        flags.append(training)
        return forward(data, training)

    monkeypatch.setattr(model.data_preprocessor, 'forward', record)
    recalibrate_bn(model, batches(), num_batches=2, net='sub0')
    assert flags == [True, True]


def test_only_the_nets_norms_change(tmp_path):
    model, _ = tiny(tmp_path)  # sub1 = [1, 2, 1, 1]: skips layer1.1/1.2
    before = copy.deepcopy(model.state_dict())
    recalibrate_bn(model, batches(), num_batches=2, net='sub1')
    after = model.state_dict()
    for key in ('backbone.layer1.1.bn1.running_mean',
                'backbone.layer1.2.bn2.running_var',
                'backbone.layer3.1.bn1.running_mean'):
        assert torch.equal(after[key], before[key]), key
    for key in ('backbone.bn1.running_mean',
                'backbone.layer1.0.bn1.running_mean',
                'backbone.layer2.1.bn2.running_var'):
        assert not torch.allclose(after[key], before[key]), key


def test_private_norm_keeps_other_nets(tmp_path):
    model, _ = tiny(tmp_path, private_norm=True)
    before = copy.deepcopy(model.state_dict())
    recalibrate_bn(model, batches(), num_batches=2, net='sub0')
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed
    assert all('.sub_norms.sub0.' in k for k in changed), sorted(changed)[:5]


def test_private_stats_keep_other_nets(tmp_path):
    model, _ = tiny(tmp_path, private_norm='stats')
    before = copy.deepcopy(model.state_dict())
    recalibrate_bn(model, batches(), num_batches=2, net='sub0')
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    # sub0's own statistics, and those of the blocks that sub0 runs on the
    # full net's input (the stem, layer1.0 and layer1.1: sub0 = [2, 2, 2, 2]
    # starts as the full net); the full net's others and sub1's stay.
    assert {k for k in changed if '.sub_stats.' in k}
    assert all('.sub_stats.sub0.' in k or k.startswith(
        ('backbone.bn1.', 'backbone.layer1.0.', 'backbone.layer1.1.'))
               for k in changed), sorted(changed)
    assert 'backbone.layer1.1.bn1.running_mean' in changed


def test_recalibrate_then_export_equals_export_then_recalibrate(tmp_path):
    model, cfg = tiny(tmp_path)
    data = batches()
    plain_cfg, sd = export_subnet(model, 'sub0', cfg)
    plain = MODELS.build(plain_cfg)
    plain.load_state_dict(sd)
    recalibrate_bn(plain, data, num_batches=3)  # single-net: net=None
    recalibrate_bn(model, data, num_batches=3, net='sub0')
    _, sd_recal = export_subnet(model, 'sub0', cfg)
    for k, v in plain.state_dict().items():
        assert_close(v, sd_recal[k], rtol=1e-5, atol=1e-6)
    x = torch.randn(2, 3, 16, 16)
    assert_close(plain(x), model.forward_nets(x, ['sub0'])[0]['sub0'],
                 rtol=1e-4, atol=1e-5)


def test_bad_arguments(tmp_path):
    model, cfg = tiny(tmp_path)
    with pytest.raises(ValueError, match="unknown net 'sub9'"):
        recalibrate_bn(model, batches(), 1, net='sub9')
    with pytest.raises(ValueError, match='positive int'):
        recalibrate_bn(model, batches(), 0, net='sub0')
    with pytest.raises(ValueError, match='no batch'):
        recalibrate_bn(model, [], 1, net='sub0')
    plain_cfg, _ = export_subnet(model, 'sub0', cfg)
    with pytest.raises(ValueError, match='single-net model'):
        recalibrate_bn(MODELS.build(plain_cfg), batches(), 1, net='sub0')

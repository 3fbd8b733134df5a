# Copyright (c) mmekd contributors. All rights reserved.
import copy
import re
from collections import Counter

import pytest
import torch
from mmpretrain.models.backbones import ResNet, ResNet_CIFAR
from torch.testing import assert_close

from mmekd.models import (DepthDynamicResNet, DepthDynamicResNetCIFAR,
                          PrivateBatchNorm2d, PrivateStatsBatchNorm2d,
                          select_blocks)

# Tiny widths: stages have 8, 16, 32, 64 channels (x4 for Bottleneck).
TINY = dict(base_channels=8, stem_channels=8, out_indices=(0, 1, 2, 3))


def plain_resnet(base, depth, stage_blocks=None, **kwargs):
    """An MMPretrain ``base`` (ResNet or ResNet_CIFAR) with ``depth``'s block
    type and ``stage_blocks`` blocks per stage (default: ``depth``'s)."""
    if stage_blocks is not None:
        block = base.arch_settings[depth][0]
        base = type('PlainResNet', (base, ),
                    dict(arch_settings={depth: (block, tuple(stage_blocks))}))
    return base(depth, **kwargs)


def key_in_dyn(dyn, key, blocks, net):
    """The key of ``dyn`` (a DepthDynamicResNet) holding ``net``'s tensor
    ``key`` of a plain ResNet: ``layerI.J`` of the plain net is
    ``layerI.blocks[I-1][J]`` of ``dyn``, and running statistics come from
    ``net``'s own set under ``private_norm='stats'``."""
    m = re.match(r'layer(\d+)\.(\d+)\.(.*)', key)
    if m:
        stage, j, rest = int(m[1]), int(m[2]), m[3]
        key = f'layer{stage}.{blocks[stage - 1][j]}.{rest}'
    module_name, _, tensor = key.rpartition('.')
    module = dyn.get_submodule(module_name)
    if isinstance(module, PrivateStatsBatchNorm2d):
        return f'{module_name}.{module.state_key(net, tensor)}'
    return key


def copy_sub_net_weights(dyn, ref, blocks, net='sub0'):
    """Load into ``ref`` (a plain ResNet) the weights and statistics of the
    net of ``dyn`` that keeps ``blocks[s]`` of stage ``s``."""
    dyn_sd = dyn.state_dict()
    sd = {
        key: dyn_sd[key_in_dyn(dyn, key, blocks, net)].clone()
        for key in ref.state_dict()
    }
    ref.load_state_dict(sd, strict=True)


def assert_outputs_equal(outs, ref_outs):
    assert len(outs) == len(ref_outs)
    for out, ref_out in zip(outs, ref_outs):
        assert_close(out, ref_out)


def assert_running_stats_equal(dyn, ref, blocks, net='sub0'):
    """The norms of ``ref``'s blocks have the statistics of the blocks of
    ``dyn``'s ``net`` they were copied from."""
    dyn_sd = dyn.state_dict()
    for key, value in ref.state_dict().items():
        if 'running' in key:
            key = key_in_dyn(dyn, key, blocks, net)
            assert_close(dyn_sd[key], value, msg=key)


def test_select_blocks():
    assert select_blocks(6, 3, 'first') == (0, 1, 2)
    assert select_blocks(6, 1, 'spread') == (0, )
    assert select_blocks(6, 2, 'spread') == (0, 5)
    assert select_blocks(6, 3, 'spread') == (0, 1, 5)
    assert select_blocks(6, 4, 'spread') == (0, 1, 3, 5)
    assert select_blocks(6, 6, 'spread') == (0, 1, 2, 3, 4, 5)
    assert select_blocks(3, 2, 'spread') == (0, 2)
    # Unique indices for every k.
    for n in range(1, 9):
        for k in range(1, n + 1):
            idx = select_blocks(n, k, 'spread')
            assert len(set(idx)) == k and idx[0] == 0 and max(idx) < n
    with pytest.raises(ValueError, match='block_choice'):
        select_blocks(6, 3, 'last')


@pytest.mark.parametrize('cifar', [False, True])
@pytest.mark.parametrize('depth', [34, 50])
@pytest.mark.parametrize('train', [False, True])
def test_full_net_equals_mmpretrain_resnet(randomize_norms, cifar, depth,
                                           train):
    torch.manual_seed(0)
    base, cls = ((ResNet_CIFAR, DepthDynamicResNetCIFAR) if cifar else
                 (ResNet, DepthDynamicResNet))
    ref = randomize_norms(base(depth, **TINY))
    sub = [2, 2, 2, 2] if depth == 34 else [3, 4, 4, 3]
    dyn = cls(depth, sub_depths=[sub], **TINY)
    dyn.load_state_dict(ref.state_dict(), strict=True)
    ref.train(train)
    dyn.train(train)
    x = torch.randn(2, 3, 32, 32)
    outs = dyn(x)
    assert_outputs_equal(outs, ref(x))
    # Same statistics after the batch: every block ran exactly once.
    dyn_sd = dyn.state_dict()
    assert_close({k: dyn_sd[k] for k in ref.state_dict()}, ref.state_dict())
    assert_outputs_equal(dyn.forward_nets(x, ['full'])[0], outs)


@pytest.mark.parametrize(
    'cifar, depth, sub_depths, block_choice, ref_depth, ref_blocks', [
        (False, 34, [2, 2, 2, 2], 'first', 18, None),
        (True, 34, [2, 2, 2, 2], 'first', 18, None),
        (False, 34, [2, 2, 2, 2], 'spread', 18, None),
        (True, 34, [[0, 2], [0, 1, 3], [0, 5], [0, 1, 2]], 'first', 34,
         (2, 3, 2, 3)),
        (False, 50, [2, 2, 2, 2], 'first', 50, (2, 2, 2, 2)),
        (False, 50, [3, 4, 4, 3], 'first', 50, (3, 4, 4, 3)),
        (True, 50, [3, 4, 4, 3], 'spread', 50, (3, 4, 4, 3)),
    ])
@pytest.mark.parametrize('train', [False, True])
def test_sub_net_equals_plain_resnet_of_its_depth(randomize_norms, cifar,
                                                  depth, sub_depths,
                                                  block_choice, ref_depth,
                                                  ref_blocks, train):
    torch.manual_seed(0)
    base, cls = ((ResNet_CIFAR, DepthDynamicResNetCIFAR) if cifar else
                 (ResNet, DepthDynamicResNet))
    dyn = randomize_norms(
        cls(depth, sub_depths=[sub_depths], block_choice=block_choice,
            **TINY))
    blocks = dyn.net_blocks['sub0']
    ref = plain_resnet(base, ref_depth, ref_blocks, **TINY)
    assert [len(b) for b in blocks] == list(ref.stage_blocks)
    copy_sub_net_weights(dyn, ref, blocks)
    dyn.train(train)
    ref.train(train)
    x = torch.randn(2, 3, 32, 32)
    assert_outputs_equal(dyn.forward_nets(x, ['sub0'])[0], ref(x))
    if train:  # batch statistics went into the same running statistics
        assert_running_stats_equal(dyn, ref, blocks)
    # The full net is a different function (else the test proves nothing).
    assert not torch.allclose(dyn(x)[-1], ref(x)[-1])


def test_stage_blocks_override():
    torch.manual_seed(0)
    dyn = DepthDynamicResNet(50, stage_blocks=(2, 2, 2, 2), **TINY)
    assert dyn.stage_blocks == (2, 2, 2, 2)
    assert dyn.blocks_per_stage('full') == [2, 2, 2, 2]
    ref = plain_resnet(ResNet, 50, (2, 2, 2, 2), **TINY)
    ref.load_state_dict(dyn.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert_outputs_equal(dyn(x), ref(x))
    # The override stays on the instance.
    assert ResNet.arch_settings[50][1] == (3, 4, 6, 3)
    assert DepthDynamicResNet(50, **TINY).stage_blocks == (3, 4, 6, 3)


def test_torchvision_resnet18_weights_load(randomize_norms):
    torchvision = pytest.importorskip('torchvision')
    torch.manual_seed(0)
    tv = randomize_norms(torchvision.models.resnet18(weights=None))
    tv.eval()
    sd = {k: v for k, v in tv.state_dict().items() if not k.startswith('fc.')}
    # torchvision and MMPretrain name their ResNet parameters the same way.
    assert set(sd) == set(ResNet(18).state_dict())
    dyn = DepthDynamicResNet(18, sub_depths=[[1, 1, 1, 1]]).eval()
    dyn.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 32, 32)
    tv_feat = torch.nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool,
                                  tv.layer1, tv.layer2, tv.layer3,
                                  tv.layer4)(x)
    assert_close(dyn(x)[0], tv_feat)


def _net_losses(outs, weights):
    return sum((o * w).sum() for out, ws in zip(outs, weights)
               for o, w in zip(out, ws))


@pytest.mark.parametrize('train', [True, False])
def test_forward_nets_equals_separate_runs(randomize_norms, train):
    torch.manual_seed(0)
    dyn = randomize_norms(
        DepthDynamicResNetCIFAR(
            34,
            sub_depths=[[2, 2, 2, 2], [1, 2, 3, 2], [3, 4, 6, 1]],
            **TINY))
    # float64: gradients summed over four nets in a different order differ
    # by float32 rounding only, which would blur a real difference.
    dyn.double()
    sep = copy.deepcopy(dyn)
    dyn.train(train)
    sep.train(train)
    calls = Counter()
    for s, layer in enumerate(dyn.res_layers):
        for b, block in enumerate(getattr(dyn, layer)):
            block.register_forward_hook(
                lambda *_, key=f'{layer}.{b}': calls.update([key]))

    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    nets = ['sub1', 'full', 'sub0', 'sub2']  # any order
    joint = dyn.forward_nets(x, nets)
    separate = [sep.forward_nets(x, [net])[0] for net in nets]
    for out, ref in zip(joint, separate):
        assert_outputs_equal(out, ref)
    # Shared prefixes ran once: layer1.0 is shared by all, layer2.0 follows
    # three different prefixes, layer3.5 only by full and sub2 (together).
    assert calls['layer1.0'] == 1
    assert calls['layer2.0'] == 3
    assert calls['layer3.5'] == 1
    assert calls['layer4.0'] == 3
    assert calls['layer4.2'] == 1

    weights = [[torch.randn_like(o) for o in out] for out in joint]
    _net_losses(joint, weights).backward()
    _net_losses(separate, weights).backward()
    grads = dict(sep.named_parameters())
    for name, p in dyn.named_parameters():
        assert (p.grad is None) == (grads[name].grad is None), name
        if p.grad is not None:
            assert_close(p.grad, grads[name].grad, msg=name)
    assert dyn.layer1[0].conv1.weight.grad.abs().sum() > 0


def test_forward_nets_defaults_and_unknown_net():
    dyn = DepthDynamicResNetCIFAR(34, sub_depths=[[2, 2, 2, 2]], **TINY)
    assert dyn.net_names == ['full', 'sub0']
    assert dyn.sub_net_names == ['sub0']
    assert dyn.blocks_per_stage('sub0') == [2, 2, 2, 2]
    dyn.eval()
    x = torch.randn(1, 3, 8, 8)
    outs = dyn.forward_nets(x)
    assert len(outs) == 2
    assert_outputs_equal(outs[1], dyn.forward_nets(x, ['sub0'])[0])
    with pytest.raises(KeyError, match="unknown net 'sub1'"):
        dyn.forward_nets(x, ['sub1'])


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(sub_depths=[[2, 2, 2]]), ValueError,
     r'sub_depths\[0\] = \[2, 2, 2\] has 3 stages'),
    (dict(sub_depths=[[0, 2, 2, 2]]), ValueError,
     r'sub_depths\[0\]\[0\] = 0: a sub-net keeps between 1 and 3'),
    (dict(sub_depths=[[2, 5, 2, 2]]), ValueError,
     r'sub_depths\[0\]\[1\] = 5.*cannot be deeper'),
    (dict(sub_depths=[[2, 2, 2, 2], [2, 2, 2, 2]]), ValueError,
     r"sub_depths\[1\].*same blocks as 'sub0'"),
    (dict(sub_depths=[[3, 4, 6, 3]]), ValueError,
     r"sub_depths\[0\].*same blocks as 'full'"),
    (dict(sub_depths=[[2, 2, 2, 2], [[0, 1], [0, 1], [0, 1], [0, 1]]]),
     ValueError, r"sub_depths\[1\].*same blocks as 'sub0'"),
    (dict(sub_depths=[[2, 2, 2, 2]], block_choice='spread'), None, None),
    (dict(sub_depths=[[[1, 2], 2, 2, 2]]), ValueError,
     r'sub_depths\[0\]\[0\] = \[1, 2\].*start with 0'),
    (dict(sub_depths=[[[0, 2, 1], 2, 2, 2]]), ValueError,
     r'sub_depths\[0\]\[0\].*sorted'),
    (dict(sub_depths=[[[0, 0, 1], 2, 2, 2]]), ValueError,
     r'sub_depths\[0\]\[0\].*unique'),
    (dict(sub_depths=[[[0, 3], 2, 2, 2]]), ValueError,
     r'sub_depths\[0\]\[0\].*< 3'),
    (dict(sub_depths=[[[], 2, 2, 2]]), ValueError, r'sub_depths\[0\]\[0\]'),
    (dict(sub_depths=[2, 2, 2, 2]), TypeError,
     r'sub_depths\[0\] must be a list'),
    (dict(sub_depths=[[2.0, 2, 2, 2]]), TypeError, r'sub_depths\[0\]\[0\]'),
    (dict(sub_depths=[[True, 2, 2, 2]]), TypeError, r'sub_depths\[0\]\[0\]'),
    (dict(block_choice='last'), ValueError,
     r"block_choice must be 'first' or 'spread', got 'last'"),
    (dict(depth=20), KeyError,
     r'invalid depth 20 for resnet: depth must be one of \[18, 34, 50'),
    (dict(stage_blocks=(3, 3, 3)), ValueError,
     r'stage_blocks must have 4 positive counts'),
    (dict(stage_blocks=(3, 0, 3, 3)), ValueError,
     r'stage_blocks must have 4 positive counts'),
    (dict(sub_depths=[[2, 2, 2, 2]], private_norm=True,
          norm_cfg=dict(type='GN', num_groups=2)), TypeError,
     r"private_norm=True supports BatchNorm2d.*is GroupNorm"),
    (dict(sub_depths=[[2, 2, 2, 2]], private_norm='stats',
          norm_cfg=dict(type='GN', num_groups=2)), TypeError,
     r"private_norm='stats' \(the default\).*BatchNorm2d.*layer2\.0\.gn1 is "
     r'GroupNorm: set private_norm=False'),
    # Nothing to keep per net: any norm.
    (dict(norm_cfg=dict(type='GN', num_groups=2)), None, None),
    (dict(private_norm='weights'), ValueError,
     r"private_norm must be False, 'stats' or True, got 'weights'"),
    (dict(private_norm=1), ValueError, r'private_norm must be.*got 1'),
])
@pytest.mark.parametrize('cls', [DepthDynamicResNet, DepthDynamicResNetCIFAR])
def test_invalid_config(cls, kwargs, error, match):
    kwargs = dict(dict(depth=34, base_channels=8, stem_channels=8), **kwargs)
    if error is None:
        cls(**kwargs)
        return
    with pytest.raises(error, match=match):
        cls(**kwargs)


# ---------------------------------------------------------------------- #
# private_norm
# ---------------------------------------------------------------------- #
def _private(**kwargs):
    return DepthDynamicResNetCIFAR(
        34, sub_depths=[[2, 2, 2, 2]], private_norm=True, **TINY, **kwargs)



@pytest.mark.parametrize('ours, parent', [(DepthDynamicResNet, ResNet),
                                          (DepthDynamicResNetCIFAR,
                                           ResNet_CIFAR)])
def test_unknown_depth_raises_like_mmpretrain(ours, parent):
    # mmpretrain's own test_resnet.py expects KeyError for ResNet(20).
    with pytest.raises(KeyError):
        parent(20)
    with pytest.raises(KeyError, match=r'invalid depth 20'):
        ours(20)

def test_private_norm_structure():
    dyn = _private()
    assert isinstance(dyn.norm1, PrivateBatchNorm2d)
    assert list(dyn.norm1.sub_norms) == ['sub0']
    assert list(dyn.layer1[1].bn2.sub_norms) == ['sub0']
    assert list(dyn.layer2[0].downsample[1].sub_norms) == ['sub0']
    # Blocks only the full net runs need no copies.
    assert list(dyn.layer1[2].bn1.sub_norms) == []
    assert dyn.norm1.active_net == 'full'


def test_private_norm_loads_plain_checkpoint(randomize_norms):
    torch.manual_seed(0)
    ref34 = randomize_norms(ResNet_CIFAR(34, **TINY))
    ref34.eval()  # (ResNet.train returns None)
    dyn = _private().eval()
    dyn.load_state_dict(ref34.state_dict(), strict=True)
    # The copies start from the full net's values.
    assert_close(dyn.norm1.sub_norms['sub0'].running_mean,
                 ref34.norm1.running_mean)
    assert_close(dyn.layer4[1].bn2.sub_norms['sub0'].weight,
                 ref34.layer4[1].bn2.weight)
    ref18 = ResNet_CIFAR(18, **TINY)
    ref18.eval()
    copy_sub_net_weights(ref34, ref18, dyn.net_blocks['sub0'])
    x = torch.randn(2, 3, 8, 8)
    full, sub0 = dyn.forward_nets(x)
    assert_outputs_equal(full, ref34(x))
    assert_outputs_equal(sub0, ref18(x))


@pytest.mark.parametrize('private_norm', [True, False])
def test_private_norm_keeps_full_net_statistics(randomize_norms,
                                                private_norm):
    torch.manual_seed(0)
    dyn = randomize_norms(
        DepthDynamicResNetCIFAR(
            34, sub_depths=[[2, 2, 2, 2]], private_norm=private_norm,
            **TINY))
    norm_keys = [
        k for k in dyn.state_dict()
        if ('bn' in k or 'downsample.1' in k) and 'sub_norms' not in k
    ]
    before = {k: dyn.state_dict()[k].clone() for k in norm_keys}
    x = torch.randn(4, 3, 8, 8)
    dyn.eval()
    full_before = dyn(x)[-1]

    # One training step of sub0 alone.
    dyn.train()
    optim = torch.optim.SGD(dyn.parameters(), lr=0.1)
    dyn.forward_nets(x, ['sub0'])[0][-1].pow(2).mean().backward()
    optim.step()
    after = dyn.state_dict()
    changed = [k for k in norm_keys if not torch.equal(before[k], after[k])]
    # The stem norm and layer1.0's norms are used by sub0.
    touched = [k for k in norm_keys if k.startswith(('bn1.', 'layer1.0.'))]
    if private_norm:
        assert changed == []
        assert not torch.equal(after['bn1.sub_norms.sub0.running_mean'],
                               before['bn1.running_mean'])
        assert not torch.equal(after['bn1.sub_norms.sub0.weight'],
                               before['bn1.weight'])
        assert dyn.norm1.active_net == 'full'
    else:
        assert set(touched) <= set(changed)
    # Convolutions are shared in both cases.
    assert dyn.conv1.weight.grad.abs().sum() > 0
    if private_norm:
        assert dyn.norm1.weight.grad is None
        # With only its norms (and not its stats) untouched, the full net
        # still changed through the shared convolutions.
        dyn.eval()
        assert not torch.allclose(dyn(x)[-1], full_before)


def test_private_norm_checkpoint_round_trip(tmp_path, randomize_norms):
    torch.manual_seed(0)
    dyn = randomize_norms(_private())
    dyn.train()
    dyn.forward_nets(torch.randn(4, 3, 8, 8), ['sub0'])  # sub0 stats move
    sd = dyn.state_dict()
    assert not torch.equal(sd['bn1.sub_norms.sub0.running_mean'],
                           sd['bn1.running_mean'])

    loaded = _private()
    loaded.load_state_dict(sd, strict=True)
    assert_close(loaded.state_dict(), sd)

    # Pretrained init_cfg must not overwrite the loaded private copies.
    ckpt = tmp_path / 'backbone.pth'
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in sd.items()}}, ckpt)
    pretrained = _private(init_cfg=dict(
        type='Pretrained', checkpoint=str(ckpt), prefix='backbone.'))
    pretrained.init_weights()
    assert_close(pretrained.state_dict(), sd)


def test_private_norm_init_weights_syncs_copies():
    dyn = _private()
    dyn.init_weights()  # zero_init_residual zeroes the full net's last norms
    assert torch.all(dyn.layer1[0].bn2.weight == 0)
    assert torch.all(dyn.layer1[0].bn2.sub_norms['sub0'].weight == 0)
    assert torch.all(dyn.layer1[0].bn1.sub_norms['sub0'].weight == 1)


def test_private_norm_forward_nets_equals_separate(randomize_norms):
    torch.manual_seed(0)
    dyn = randomize_norms(_private())
    sep = copy.deepcopy(dyn)
    x = torch.randn(2, 3, 8, 8)
    for out, net in zip(dyn.forward_nets(x), dyn.net_names):
        assert_outputs_equal(out, sep.forward_nets(x, [net])[0])


def test_private_norm_follows_frozen_stages():
    dyn = _private(frozen_stages=1)
    dyn.train()
    assert not dyn.norm1.training
    assert not dyn.norm1.sub_norms['sub0'].training
    assert not dyn.norm1.sub_norms['sub0'].weight.requires_grad
    assert dyn.layer2[0].bn1.sub_norms['sub0'].training


# ---------------------------------------------------------------------- #
# private_norm='stats'
# ---------------------------------------------------------------------- #
STATS_SUBS = [[2, 2, 2, 2], [1, 1, 1, 1]]


def _private_stats(private_norm='stats', **kwargs):
    return DepthDynamicResNetCIFAR(
        34, sub_depths=STATS_SUBS, private_norm=private_norm, **TINY,
        **kwargs)


def test_private_stats_structure():
    dyn = _private_stats()
    # One input for every net using them: the stem, the common prefix
    # (layer1.0 for all, layer1.1 for full and sub0) and the full net's own
    # blocks keep plain BatchNorm.
    for norm in (dyn.norm1, dyn.layer1[0].bn1, dyn.layer1[1].bn2,
                 dyn.layer1[2].bn1, dyn.layer2[2].bn1):
        assert type(norm) is torch.nn.BatchNorm2d
    assert isinstance(dyn.layer2[0].bn1, PrivateStatsBatchNorm2d)
    assert list(dyn.layer2[0].bn1.sub_stats) == ['sub0', 'sub1']
    assert list(dyn.layer2[0].downsample[1].sub_stats) == ['sub0', 'sub1']
    assert list(dyn.layer2[1].bn2.sub_stats) == ['sub0']
    assert dyn.layer2[1].bn2.stats_of == dict(full=None, sub0='sub0')
    # No parameter is added: the weights stay shared.
    shared = _private_stats(private_norm=False)
    assert [n for n, _ in dyn.named_parameters()] == [
        n for n, _ in shared.named_parameters()
    ]
    extra = set(dyn.state_dict()) - set(shared.state_dict())
    assert extra and all('.sub_stats.' in k and 'running' in k
                         or k.endswith('num_batches_tracked') for k in extra)
    assert not set(shared.state_dict()) - set(dyn.state_dict())


def test_private_stats_train_exactly_as_shared(randomize_norms):
    torch.manual_seed(0)
    dyn = randomize_norms(_private_stats()).double().train()
    shared = _private_stats(private_norm=False).double().train()
    shared.load_state_dict(dyn.state_dict(), strict=False)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    weights = None
    for model in (dyn, shared):
        outs = model.forward_nets(x)
        if weights is None:
            weights = [[torch.randn_like(o) for o in out] for out in outs]
            ref_outs = outs
        else:
            for out, ref in zip(outs, ref_outs):
                assert_outputs_equal(out, ref)
        _net_losses(outs, weights).backward()
    for (name, p), q in zip(dyn.named_parameters(), shared.parameters()):
        assert_close(p.grad, q.grad, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize('private_norm', ['stats', False])
def test_private_stats_are_each_nets_own(private_norm):
    """After a training step of all nets, each net is tested with the
    statistics its own activations produced: those of the same plain ResNet
    trained alone on the batch. Shared BatchNorm fails this."""
    momentum_1 = dict(norm_cfg=dict(type='BN', momentum=1.0))  # last batch
    torch.manual_seed(0)
    dyn = _private_stats(private_norm, **momentum_1).train()
    refs = dict(
        full=ResNet_CIFAR(34, **TINY, **momentum_1),
        sub0=ResNet_CIFAR(18, **TINY, **momentum_1),
        sub1=plain_resnet(ResNet_CIFAR, 18, [1, 1, 1, 1], **TINY,
                          **momentum_1))
    for net, ref in refs.items():
        copy_sub_net_weights(dyn, ref, dyn.net_blocks[net], net)
        ref.train()
    x, x_test = torch.randn(4, 3, 8, 8), torch.randn(2, 3, 8, 8)
    dyn.forward_nets(x)
    for ref in refs.values():
        ref(x)
    dyn.eval()
    for net, ref in refs.items():
        ref.eval()
        got, want = dyn.forward_nets(x_test, [net])[0][-1], ref(x_test)[-1]
        if private_norm or net == 'sub1':
            # (sub1 runs last through every block it uses: with shared
            # statistics and momentum 1 they are its own)
            assert_close(got, want, msg=net)
        else:
            assert not torch.allclose(got, want), net


def test_private_stats_loads_shared_checkpoint(randomize_norms):
    torch.manual_seed(0)
    shared = randomize_norms(_private_stats(private_norm=False)).eval()
    dyn = _private_stats().eval()
    dyn.load_state_dict(shared.state_dict(), strict=True)
    # Every set of statistics starts from the stored (shared) ones.
    assert_close(dyn.layer2[0].bn1.sub_stats['sub1'].running_var,
                 shared.layer2[0].bn1.running_var)
    x = torch.randn(2, 3, 8, 8)
    for out, ref in zip(dyn.forward_nets(x), shared.forward_nets(x)):
        assert_outputs_equal(out, ref)


def test_private_stats_checkpoint_round_trip(randomize_norms):
    torch.manual_seed(0)
    dyn = randomize_norms(_private_stats()).train()
    dyn.forward_nets(torch.randn(4, 3, 8, 8))
    sd = dyn.state_dict()
    key = 'layer2.1.bn2.sub_stats.sub0.running_mean'
    assert not torch.equal(sd[key], sd['layer2.1.bn2.running_mean'])
    loaded = _private_stats()
    loaded.load_state_dict(sd, strict=True)
    assert_close(loaded.state_dict(), sd)
    assert loaded.layer2[1].bn2.active_net == 'full'


def test_private_stats_follow_norm_eval():
    dyn = _private_stats(norm_eval=True)
    dyn.train()
    assert not dyn.layer2[0].bn1.sub_stats['sub0'].training
    running = dyn.layer2[0].bn1.sub_stats['sub0'].running_mean.clone()
    dyn.forward_nets(torch.randn(4, 3, 8, 8), ['sub0'])
    assert torch.equal(dyn.layer2[0].bn1.sub_stats['sub0'].running_mean,
                       running)

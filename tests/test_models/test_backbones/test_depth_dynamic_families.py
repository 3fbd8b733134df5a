# Copyright (c) mmekd contributors. All rights reserved.
"""Depth-dynamic ConvNeXt, Swin and ViT on the one mechanism
(``mmekd/models/backbones/depth_dynamic.py``): stock keys, every sub-net
exactly the stock smaller model, the shared prefix computed once, every
loss term, both step modes, and the refusals. Tiny archs here; the real
ConvNeXt-S / Swin-S / DeiT-S are in the slow tests at the end."""
import copy

import pytest
import torch
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmpretrain.structures import DataSample

from mmekd.engine.optim import SafeOptimWrapper
from mmekd.models.plain_net import build_plain, plain_net
from mmekd.registry import MODELS
from mmekd.utils.memory_meters import SavedTensorMeter

NUM_CLASSES = 5
SIZE = 32
FAMILIES = {
    'convnext': dict(
        backbone=dict(type='mmekd.DepthDynamicConvNeXt',
                      arch=dict(depths=[2, 2, 4, 2],
                                channels=[8, 16, 32, 64]),
                      sub_stage_blocks=[[1, 1, 2, 1]]),
        neck=None, in_channels=64,
        stock=dict(type='ConvNeXt', arch=dict(depths=[1, 1, 2, 1],
                                              channels=[8, 16, 32, 64]))),
    'swin': dict(
        backbone=dict(type='mmekd.DepthDynamicSwinTransformer',
                      arch=dict(embed_dims=16, depths=[2, 2, 4, 2],
                                num_heads=[1, 2, 2, 4]),
                      img_size=SIZE, patch_size=2, window_size=2,
                      sub_stage_blocks=[[2, 2, 2, 2]]),
        neck=dict(type='GlobalAveragePooling'), in_channels=128,
        stock=dict(type='SwinTransformer', img_size=SIZE, patch_size=2,
                   window_size=2, arch=dict(embed_dims=16,
                                            depths=[2, 2, 2, 2],
                                            num_heads=[1, 2, 2, 4]))),
    'vit': dict(
        backbone=dict(type='mmekd.DepthDynamicVisionTransformer',
                      arch=dict(embed_dims=32, num_layers=6, num_heads=2,
                                feedforward_channels=64),
                      img_size=SIZE, patch_size=8,
                      sub_stage_blocks=[[2], [4]]),
        neck=None, in_channels=32,
        stock=dict(type='VisionTransformer', img_size=SIZE, patch_size=8,
                   arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                             feedforward_channels=64))),
}


def _cfg(family, **backbone):
    f = FAMILIES[family]
    return dict(
        type='mmekd.DDNNClassifier',
        backbone=dict(f['backbone'], **backbone),
        neck=f['neck'],
        head=dict(type='mmekd.MultiNetClsHead', num_classes=NUM_CLASSES,
                  in_channels=f['in_channels']),
        data_preprocessor=dict(type='ClsDataPreprocessor',
                               num_classes=NUM_CLASSES, mean=[120.] * 3,
                               std=[60.] * 3))


def _model(family, seed=0, **backbone):
    torch.manual_seed(seed)
    model = MODELS.build(_cfg(family, **backbone))
    model.init_weights()
    # Random values everywhere (ConvNeXt's layer scale starts at 1e-6:
    # every block would be the identity and every net the same).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _batch(n=4, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        inputs=torch.rand(n, 3, SIZE, SIZE, generator=gen) * 255,
        data_samples=[DataSample().set_gt_label(i % NUM_CLASSES)
                      for i in range(n)])


@pytest.mark.parametrize('family', FAMILIES)
def test_stock_keys_load_into_the_full_net(family, tmp_path):
    """A stock classifier of the full arch, saved to a file, loads with no
    missing or unexpected backbone key."""
    f = FAMILIES[family]
    stock_bb = dict(f['stock'], arch=dict(f['backbone']['arch']))
    stock = MMPRETRAIN_MODELS.build(dict(
        type='ImageClassifier', backbone=stock_bb, neck=f['neck'],
        head=dict(type='LinearClsHead', num_classes=NUM_CLASSES,
                  in_channels=f['in_channels'])))
    path = tmp_path / 'stock.pth'
    torch.save(dict(state_dict=stock.state_dict()), path)
    model = _model(family)
    state = torch.load(path, weights_only=True)['state_dict']
    result = model.load_state_dict(state, strict=False)
    assert [k for k in result.missing_keys if k.startswith('backbone.')] == []
    assert [k for k in result.unexpected_keys
            if k.startswith('backbone.')] == []
    stock.eval(), model.eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    torch.testing.assert_close(model(x), stock(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize('family', FAMILIES)
def test_every_net_is_the_stock_smaller_model(family):
    """In eval, every net computes what a stock model of its depth computes
    with the mapped weights (the sub-nets' stock arch built directly, not
    through the export)."""
    model = _model(family).eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    logits, _ = model.forward_nets(x)
    for net in model.net_names:
        cfg, state_dict = plain_net(model, net, _cfg(family))
        if net == 'sub0':  # the stock arch the test names, by hand
            assert cfg['backbone']['type'] == FAMILIES[family]['stock'][
                'type']
            assert cfg['backbone']['arch'] == FAMILIES[family]['stock'][
                'arch']
        plain = build_plain(cfg)
        plain.load_state_dict(state_dict)
        plain.eval()
        diff = (plain(x, mode='tensor') - logits[net]).abs().max()
        assert diff <= 1e-5, (net, float(diff))


@pytest.mark.parametrize('family', FAMILIES)
def test_shared_prefix_is_computed_once_in_training(family):
    """Training mode, no drop path: one pass of all nets equals each net run
    alone (batch-independent blocks), and the blocks the nets share run
    once."""
    model = _model(family, drop_path_rate=0.0).train()
    x = torch.rand(2, 3, SIZE, SIZE)
    together = model.backbone.forward_net_stages(
        x, model.net_names, model.feature_stages)
    for net, feats in zip(model.net_names, together):
        alone = model.backbone.forward_net_stages(x, [net],
                                                  model.feature_stages)[0]
        for a, b in zip(feats, alone):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    calls = []
    run = model.backbone.run_block
    model.backbone.run_block = lambda s, b, y: calls.append((s, b)) or run(
        s, b, y)
    model.backbone.forward_net_stages(x, model.net_names,
                                      model.feature_stages)
    tree = model.backbone.tree
    distinct = {tuple(p[:i + 1]) for p in tree.paths.values()
                for i in range(len(p))}
    assert len(calls) == len(distinct) < sum(
        len(p) for p in tree.paths.values())


@pytest.mark.parametrize('family', FAMILIES)
def test_per_net_drop_path_rates_are_the_stock_ones(family):
    """drop_path='per_net' (default): every net's blocks get the rates a
    stock model of its depth gets; nets whose rates differ at a block run
    it separately in training (and together in eval)."""
    model = _model(family, drop_path_rate=0.2)
    stock_cls = MMPRETRAIN_MODELS.get(FAMILIES[family]['stock']['type'])
    for net in model.net_names:
        cfg, _ = plain_net(model, net, _cfg(family, drop_path_rate=0.2))
        stock = build_plain(cfg).backbone
        assert type(stock) is stock_cls
        want = [m.drop_prob for m in stock.modules()
                if type(m).__name__ == 'DropPath']
        path = model.backbone.tree.paths[net]
        got = []
        for s, b in path:
            got += [m.rates[net] for m in
                    model.backbone.block_module(s, b).modules()
                    if type(m).__name__ == 'PerNetDropPath']
        assert got == pytest.approx(want, abs=0), net
    model.train()
    variant = model.backbone.block_variant()
    assert variant is not None
    model.eval()
    assert model.backbone.block_variant() is None


@pytest.mark.parametrize('family', FAMILIES)
def test_full_net_drop_path_rates_are_python_floats(family):
    """drop_path='full_net' keeps the stock DropPath modules; their rates
    are Python floats (VisionTransformer's numpy floats stop
    torch.compile from tracing them as constants)."""
    model = _model(family, drop_path_rate=0.2, drop_path='full_net')
    rates = [m.drop_prob for m in model.backbone.modules()
             if type(m).__name__ == 'DropPath']
    assert rates and any(r > 0 for r in rates)
    assert all(type(r) is float for r in rates), {type(r) for r in rates}


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('mode', ['memory_efficient', 'simple'])
def test_training_step_gives_every_loss_term(family, mode):
    model = _model(family).train()
    model.train_step_mode = mode
    wrapper = SafeOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    before = [p.detach().clone() for p in model.parameters()]
    log_vars = model.train_step(_batch(), wrapper)
    subs = model.backbone.sub_net_names
    expected = {'loss', 'loss_ce_full'} | {
        f'loss_{t}_{s}' for s in subs for t in ('ce', 'kl', 'at')}
    assert set(log_vars) == expected
    for k, v in log_vars.items():
        assert torch.isfinite(v) and v > 0, (k, v)
    changed = sum(not torch.equal(a, p)
                  for a, p in zip(before, model.parameters()))
    assert changed > 0.9 * len(before)


class _Recording(SafeOptimWrapper):
    """Keeps the gradients its step sees."""

    def step(self, **kwargs):
        self.grads = [p.grad.clone() for p in self.optimizer.param_groups[0]
                      ['params'] if p.grad is not None]
        super().step(**kwargs)


@pytest.mark.parametrize('family', FAMILIES)
def test_memory_efficient_equals_simple(family):
    """Same losses and gradients from both step modes (float64, no drop
    path), the memory-efficient step saving about what the full net alone
    saves for backward."""
    model = _model(family, drop_path_rate=0.0).double().train()
    out = {}
    for mode in ('simple', 'memory_efficient', 'full alone'):
        m = copy.deepcopy(model)
        m.train_step_mode = 'simple' if mode == 'full alone' else mode
        if mode == 'full alone':
            m.nets_to_train = lambda: ['full']
        wrapper = _Recording(torch.optim.SGD(m.parameters(), lr=0.0))
        with SavedTensorMeter(m) as meter:
            log_vars = m.train_step(_batch(), wrapper)
        out[mode] = (log_vars, wrapper.grads, meter.peak)
    (log_a, grad_a, peak_a), (log_b, grad_b, peak_b) = out['simple'], out[
        'memory_efficient']
    for k in log_a:
        torch.testing.assert_close(log_b[k], log_a[k], rtol=1e-9, atol=1e-12)
    assert len(grad_a) == len(grad_b) > 0
    for a, b in zip(grad_a, grad_b):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    assert peak_b < peak_a
    assert peak_b <= 1.1 * out['full alone'][2], (peak_b, out['full alone'])


@pytest.mark.parametrize('family, kwargs, match', [
    ('swin', dict(sub_stage_blocks=[[2, 2, 3, 2]], block_choice='spread'),
     r"sub-net 'sub0' runs blocks \[0, 1, 3\] of stage 2: its block 2 would "
     'be block 3, which shifts its windows'),
    ('swin', dict(sub_stage_blocks=[[2, 2, [0, 2], 2]]),
     'shift'),
    ('swin', dict(out_after_downsample=True), 'out_after_downsample'),
    ('convnext', dict(norm_sharing='stats'),
     r"norm_sharing='stats': ConvNeXt's norms are LayerNorms"),
    ('vit', dict(norm_sharing='private'), 'LayerNorms'),
    ('convnext', dict(sub_stage_blocks=[[1, 1, 2]]),
     r'sub_stage_blocks\[0\] = \[1, 1, 2\] has 3 stages'),
    ('vit', dict(sub_stage_blocks=[[7]]),
     r'sub_stage_blocks\[0\]\[0\] = 7.*between 1 and 6'),
    ('vit', dict(out_indices=(2, 5)), 'out_indices=-1'),
    ('convnext', dict(drop_path='some'), 'drop_path must be one of'),
])
def test_refusals(family, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(_cfg(family, **kwargs))


@pytest.mark.parametrize('family', FAMILIES)
def test_nets_of_a_stored_config_are_read_not_built(family, monkeypatch):
    """The nets a checkpoint's stored config (``meta['cfg']``) describes are
    computed from its numbers: the DDNN's own nets, the stock class as one
    net, another arch named; nothing is built."""
    from mmengine.config import Config

    from mmekd.apis import trained_nets
    from mmekd.models.plain_net import ExportError
    model = _model(family)
    backbone = model.backbone

    def meta(backbone_cfg):
        return dict(cfg=Config(dict(model=dict(
            type='mmekd.DDNNClassifier', backbone=backbone_cfg))).pretty_text)

    def no_build(*args, **kwargs):
        raise AssertionError('a model was built from the stored config')

    stock = FAMILIES[family]['stock']
    full_arch = backbone.net_arch('full')
    monkeypatch.setattr(MODELS, 'build', no_build)
    monkeypatch.setattr(MMPRETRAIN_MODELS, 'build', no_build)
    assert trained_nets(meta(FAMILIES[family]['backbone']),
                        backbone) == backbone.net_blocks
    one = trained_nets(meta(dict(stock, arch=full_arch)), backbone)
    assert one == {'full': backbone.net_blocks['full']}
    assert trained_nets(meta(dict(type='ResNet', depth=18)), backbone) is None
    with pytest.raises(ExportError, match=r'was trained as a '
                       f"{stock['type']} with arch .*another architecture"):
        trained_nets(meta(stock), backbone)  # the stock, smaller arch
    with pytest.raises(ExportError, match=r"with arch '(tiny|base)'.*but"):
        trained_nets(meta(dict(type=stock['type'])), backbone)  # its default
    with pytest.raises(ExportError, match='sub-nets that do not fit'):
        trained_nets(meta(dict(FAMILIES[family]['backbone'],
                               sub_stage_blocks=[[99] * 4])), backbone)

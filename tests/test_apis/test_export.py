# Copyright (c) mmekd contributors. All rights reserved.
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS
from torch.testing import assert_close

from mmekd.apis import (ExportError, build_model, check_net_in_checkpoint,
                        export_subnet, export_to_files, load_ddnn_model,
                        plain_model_cfg)
from mmekd.registry import MODELS as MMEKD_MODELS
from tiny_ddnn import CLASSES, randomize, tiny_model_files, write_checkpoint, \
    write_config


def build_plain(cfg, state_dict):
    model = MODELS.build(cfg).eval()
    model.load_state_dict(state_dict, strict=True)
    return model


def inputs(n=3, size=16, seed=1):
    return torch.randn(n, 3, size, size,
                       generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('private_norm,private_fc', [(False, False),
                                                     ('stats', False),
                                                     (True, True),
                                                     (True, False)])
def test_exported_logits_equal_ddnn(tmp_path, private_norm, private_fc):
    cfg_path = write_config(
        osp.join(tmp_path, 'c.py'),
        private_norm=private_norm,
        private_fc=private_fc)
    cfg = Config.fromfile(cfg_path)
    model = randomize(build_model(cfg))
    x = inputs()
    logits, _ = model.forward_nets(x)
    # The nets really differ (else a wrong mapping could pass).
    assert not torch.allclose(logits['full'], logits['sub0'], atol=1e-3)
    assert not torch.allclose(logits['sub0'], logits['sub1'], atol=1e-3)
    types = {}
    for net in model.net_names:
        plain_cfg, state_dict = export_subnet(model, net, cfg.model)
        assert not any('sub_norms' in k or 'sub_stats' in k or 'sub_fcs' in k
                       for k in state_dict)
        plain = build_plain(plain_cfg, state_dict)
        assert_close(plain(x), logits[net], rtol=0, atol=1e-6)
        types[net] = (plain_cfg['backbone']['type'],
                      plain_cfg['backbone']['depth'],
                      plain_cfg['backbone'].get('stage_blocks'))
        assert plain_cfg['head']['type'] == 'LinearClsHead'
    assert types == {
        'full': ('ResNet_CIFAR', 34, None),
        'sub0': ('ResNet_CIFAR', 18, None),
        'sub1': ('mmekd.DepthDynamicResNetCIFAR', 34, [1, 2, 1, 1]),
    }


def test_export_renumbers_spread_blocks(tmp_path):
    # block_choice='spread': sub0 keeps blocks (0,2) (0,3) (0,5) (0,2) of
    # ResNet-34 and becomes a ResNet-18 whose layerI.1 is one of those.
    cfg_path = write_config(
        osp.join(tmp_path, 'c.py'), block_choice='spread', cifar=False)
    cfg = Config.fromfile(cfg_path)
    model = randomize(build_model(cfg))
    assert model.backbone.net_blocks['sub0'] == ((0, 2), (0, 3), (0, 5),
                                                 (0, 2))
    x = inputs(size=32)
    logits, _ = model.forward_nets(x, ['sub0'])
    plain_cfg, state_dict = export_subnet(model, 'sub0', cfg.model)
    assert plain_cfg['backbone']['type'] == 'ResNet'
    assert plain_cfg['backbone']['depth'] == 18
    assert_close(state_dict['backbone.layer3.1.conv1.weight'],
                 model.state_dict()['backbone.layer3.5.conv1.weight'])
    assert_close(
        build_plain(plain_cfg, state_dict)(x), logits['sub0'], rtol=0,
        atol=1e-6)


def test_standard_depth():
    from mmekd.models.backbones import DepthDynamicResNet
    basic = DepthDynamicResNet(18, base_channels=2, stem_channels=2)
    bottleneck = DepthDynamicResNet(50, base_channels=2, stem_channels=2)
    assert basic.standard_depth([2, 2, 2, 2]) == 18
    assert basic.standard_depth([3, 4, 6, 3]) == 34
    assert bottleneck.standard_depth([3, 4, 6, 3]) == 50
    assert bottleneck.standard_depth([2, 2, 2, 2]) is None
    assert basic.standard_depth([1, 1, 1, 1]) is None


def test_export_to_files_plain_checkpoint(tmp_path):
    cfg_path, ckpt_path, model = tiny_model_files(tmp_path)
    out_cfg, out_ckpt = export_to_files(cfg_path, ckpt_path, 'sub0',
                                        osp.join(tmp_path, 'out'))
    assert osp.basename(out_cfg) == 'tiny_ddnn_sub0-resnet18.py'
    # A plain checkpoint: weights_only=True without any allow-list, no
    # training state, dataset meta kept.
    ckpt = torch.load(out_ckpt, weights_only=True)
    assert set(ckpt) == {'meta', 'state_dict'}
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == CLASSES
    assert ckpt['meta']['mmekd_export']['net'] == 'sub0'
    assert ckpt['meta']['mmekd_export']['blocks_per_stage'] == [2, 2, 2, 2]
    # The config needs no mmekd for the model.
    text = open(out_cfg).read()
    exported = Config.fromfile(out_cfg)
    assert 'custom_imports' not in exported
    assert exported.default_scope == 'mmpretrain'
    assert 'mmekd' not in repr(exported.model)
    assert exported.test_evaluator == dict(type='Accuracy', topk=(1, ))
    assert exported.test_dataloader.dataset.pipeline == [
        dict(type='LoadImageFromFile')
    ] + Config.fromfile(cfg_path).test_dataloader.dataset.pipeline
    # mmekd.Digits has no stock counterpart: its images are written out.
    assert exported.test_dataloader.dataset.type == 'CustomDataset'
    assert ('# Note: test_dataloader.dataset: mmekd.Digits read as image '
            'files' in text)
    code = [line for line in text.splitlines() if not line.startswith('#')]
    assert not any('mmekd' in line for line in code)


def test_get_model_and_inferencer(tmp_path):
    import mmpretrain
    cfg_path, ckpt_path, model = tiny_model_files(tmp_path)
    x = inputs()
    for net in ('sub0', 'sub1'):
        out_cfg, out_ckpt = export_to_files(cfg_path, ckpt_path, net,
                                            osp.join(tmp_path, 'out'))
        plain = mmpretrain.get_model(out_cfg, pretrained=out_ckpt)
        assert tuple(plain._dataset_meta['classes']) == CLASSES
        assert_close(
            plain(x), model.forward_nets(x, [net])[0][net], rtol=0,
            atol=1e-6)
        img = np.random.default_rng(0).integers(
            0, 255, (16, 16, 3), dtype=np.uint8)
        inferencer = mmpretrain.ImageClassificationInferencer(
            out_cfg, pretrained=out_ckpt)
        result = inferencer(img)[0]
        # Same image through the DDNN model, predicting with this net.
        model.predict_net = net
        model.eval_all_nets = False
        data = dict(inputs=[torch.from_numpy(img).permute(2, 0, 1)])
        expected = model.test_step(data)[0].pred_score
        assert_close(
            torch.as_tensor(result['pred_scores']), expected, rtol=0,
            atol=1e-6)
        assert result['pred_class'] == CLASSES[int(expected.argmax())]


def test_export_recalibrated(tmp_path):
    cfg_path, ckpt_path, model = tiny_model_files(tmp_path)
    _, plain_ckpt = export_to_files(
        cfg_path, ckpt_path, 'sub0', osp.join(tmp_path, 'a'))
    _, recal_ckpt = export_to_files(
        cfg_path, ckpt_path, 'sub0', osp.join(tmp_path, 'b'),
        recalibrate_bn=2)
    plain = torch.load(plain_ckpt, weights_only=True)
    recal = torch.load(recal_ckpt, weights_only=True)
    key = 'backbone.layer1.0.bn1.running_mean'
    assert not torch.allclose(plain['state_dict'][key],
                              recal['state_dict'][key])
    assert int(recal['state_dict'][key.replace(
        'running_mean', 'num_batches_tracked')]) == 2
    weight = 'backbone.layer1.0.conv1.weight'
    assert torch.equal(plain['state_dict'][weight],
                       recal['state_dict'][weight])
    assert recal['meta']['mmekd_export']['bn_recalibration_batches'] == 2


def test_export_recalibrated_records_batches_used(tmp_path):
    cfg_path, ckpt_path, _ = tiny_model_files(tmp_path)
    cfg = Config.fromfile(cfg_path)
    cfg.train_dataloader.dataset.indices = 8  # 2 batches of 4
    with pytest.warns(UserWarning, match='5 batches asked, but the '
                      'dataloader has only 2'):
        cfg_out, ckpt_out = export_to_files(
            cfg, ckpt_path, 'sub0', str(tmp_path), recalibrate_bn=5)
    ckpt = torch.load(ckpt_out, weights_only=True)
    assert ckpt['meta']['mmekd_export']['bn_recalibration_batches'] == 2
    assert int(ckpt['state_dict'][
        'backbone.layer1.0.bn1.num_batches_tracked']) == 2
    with open(cfg_out) as f:
        assert 'recalibrated on 2 training batches' in f.read()


# ---------------------------------------------------------------------- #
# bad input
# ---------------------------------------------------------------------- #
def test_unknown_net(tmp_path):
    cfg_path, ckpt_path, model = tiny_model_files(tmp_path)
    with pytest.raises(ExportError, match=r"unknown net 'sub7'.*'sub1'"):
        export_to_files(cfg_path, ckpt_path, 'sub7', str(tmp_path))
    with pytest.raises(ExportError, match='unknown net'):
        plain_model_cfg(model, 'teacher', Config.fromfile(cfg_path).model)


def test_checkpoint_of_another_config(tmp_path):
    cfg_path, _, _ = tiny_model_files(tmp_path)
    other_cfg = write_config(osp.join(tmp_path, 'other.py'), num_classes=7)
    other_ckpt, _ = write_checkpoint(osp.join(tmp_path, 'other.pth'),
                                     other_cfg)
    with pytest.raises(ExportError) as e:
        export_to_files(cfg_path, other_ckpt, 'sub0', str(tmp_path))
    msg = str(e.value)
    assert 'shape mismatches (2)' in msg
    assert 'head.fc.weight: checkpoint (7, 64) vs model (5, 64)' in msg

    private_cfg = write_config(
        osp.join(tmp_path, 'private.py'), private_norm=True)
    with pytest.raises(ExportError) as e:
        load_ddnn_model(private_cfg, other_ckpt)
    msg = str(e.value)
    assert 'missing keys' in msg and 'sub_norms.sub0.weight' in msg


def test_net_not_in_checkpoint(tmp_path):
    # Trained with sub0 only; the config now also has sub1 = [1, 2, 1, 1].
    trained_cfg = write_config(
        osp.join(tmp_path, 'trained.py'), sub_depths=[[2, 2, 2, 2]])
    ckpt, _ = write_checkpoint(osp.join(tmp_path, 'trained.pth'),
                               trained_cfg)
    cfg_path = write_config(osp.join(tmp_path, 'now.py'))
    export_to_files(cfg_path, ckpt, 'sub0', str(tmp_path))  # fine
    with pytest.raises(ExportError,
                       match=r"does not contain net 'sub1'.*'sub0': "
                       r'\[2, 2, 2, 2\]'):
        export_to_files(cfg_path, ckpt, 'sub1', str(tmp_path))

    # With private norms the missing copies are named.
    trained_cfg = write_config(
        osp.join(tmp_path, 'trained_p.py'),
        sub_depths=[[2, 2, 2, 2]],
        private_norm=True)
    ckpt, _ = write_checkpoint(osp.join(tmp_path, 'trained_p.pth'),
                               trained_cfg)
    cfg_path = write_config(osp.join(tmp_path, 'now_p.py'), private_norm=True)
    with pytest.raises(ExportError, match=r"copies for nets \['sub1'\]"):
        export_to_files(cfg_path, ckpt, 'sub1', str(tmp_path))


def test_export_needs_ddnn_model():
    plain = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='ResNet_CIFAR', depth=18, base_channels=8),
            head=dict(type='LinearClsHead', num_classes=3, in_channels=64)))
    with pytest.raises(ExportError, match='mmekd.DDNNClassifier'):
        export_subnet(plain, 'full', {})


def test_checkpoint_with_shared_statistics(tmp_path, monkeypatch):
    """A checkpoint trained with private_norm=False loads into the default
    private_norm='stats' config: its nets keep the shared statistics (the
    same logits and export), and the log says so."""
    shared_cfg = write_config(osp.join(tmp_path, 'shared.py'))
    ckpt, shared = write_checkpoint(osp.join(tmp_path, 'shared.pth'),
                                    shared_cfg)
    stats_cfg = write_config(osp.join(tmp_path, 'stats.py'),
                             private_norm='stats')
    logged = []
    monkeypatch.setattr('mmekd.utils.checkpoint_keys.print_log',
                        lambda msg, **kwargs: logged.append(msg))
    model = load_ddnn_model(stats_cfg, ckpt)
    warned = [m for m in logged if 'no per-net BatchNorm statistics' in m]
    assert len(warned) == 1 and 'recalibrate-bn' in warned[0], warned
    x = inputs()
    got, _ = model.forward_nets(x)
    want, _ = shared.eval().forward_nets(x)
    for net in model.net_names:
        assert_close(got[net], want[net], rtol=0, atol=0)
    _, sd = export_subnet(model, 'sub1', Config.fromfile(stats_cfg).model)
    _, ref = export_subnet(shared, 'sub1', Config.fromfile(shared_cfg).model)
    assert sd.keys() == ref.keys()
    for k in sd:
        assert torch.equal(sd[k], ref[k]), k


def test_export_drops_training_only_fields(tmp_path):
    # Loss levers and the step mode configure DDNN training only: the plain
    # classifier (which does not take them) is built without them.
    cfg = Config.fromfile(write_config(osp.join(tmp_path, 'c.py')))
    cfg.model.update(sub_ce_weight=0.5, full_loss_weight=0.5,
                     train_nets='sandwich', kl_topk=2,
                     train_step_mode='simple')
    model = randomize(build_model(cfg))
    assert model.nets_to_train() == ['full', 'sub1']
    plain_cfg, state_dict = export_subnet(model, 'sub1', cfg)
    assert set(plain_cfg) == {'type', 'backbone', 'neck', 'head',
                              'data_preprocessor'}
    x = inputs()
    assert_close(build_plain(plain_cfg, state_dict)(x),
                 model.forward_nets(x, ['sub1'])[0]['sub1'], rtol=0,
                 atol=1e-6)


def test_stored_config_is_read_not_built(tmp_path, monkeypatch):
    """The nets a checkpoint was trained with are computed from the numbers
    of its stored config, never by building what it describes: huge widths
    or a chosen norm class cost nothing; another architecture is named."""
    cfg_path, _, model = tiny_model_files(tmp_path)
    stored = Config.fromfile(cfg_path)
    stored.model.backbone.update(
        base_channels=4096, stem_channels=4096,
        norm_cfg=dict(type='SyncBN'), sub_depths=[[2, 2, 2, 2]])
    ckpt = osp.join(tmp_path, 'huge_meta.pth')
    torch.save(dict(meta=dict(cfg=stored.pretty_text),
                    state_dict=model.state_dict()), ckpt)

    def no_build(*args, **kwargs):
        raise AssertionError('a model was built from the stored config')

    loaded = load_ddnn_model(cfg_path, ckpt)  # the user's config builds
    with monkeypatch.context() as m:
        for registry in (MODELS, MMEKD_MODELS):
            m.setattr(registry, 'build', no_build)
        with pytest.raises(ExportError,
                           match=r"does not contain net 'sub1'"):
            check_net_in_checkpoint(loaded, 'sub1')
        check_net_in_checkpoint(loaded, 'sub0')  # [2, 2, 2, 2]: trained

    stored.model.backbone.update(depth=50)
    torch.save(dict(meta=dict(cfg=stored.pretty_text),
                    state_dict=model.state_dict()), ckpt)
    loaded = load_ddnn_model(cfg_path, ckpt)
    with monkeypatch.context() as m:
        for registry in (MODELS, MMEKD_MODELS):
            m.setattr(registry, 'build', no_build)
        with pytest.raises(ExportError, match=r'trained as a '
                           r'DepthDynamicResNetCIFAR of depth 50 .*a '
                           'checkpoint of another architecture'):
            check_net_in_checkpoint(loaded, 'sub0')

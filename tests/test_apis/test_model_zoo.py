# Copyright (c) mmekd contributors. All rights reserved.
import os.path as osp

import mmpretrain
import pytest
import torch
import yaml
from mmengine.config import Config
from torch.testing import assert_close

from mmekd.apis import build_model, model_index_path, net_costs, \
    register_model_zoo
from tiny_ddnn import randomize

DIGITS = 'ddnn-ekd_resnet34-w16-sub1-resnet10_1xb64_digits'


def metafile_models():
    index, root = model_index_path()
    with open(index) as f:
        imports = yaml.safe_load(f)['Import']
    models = []
    for path in imports:
        with open(osp.join(root, path)) as f:
            models += yaml.safe_load(f)['Models']
    return models, root


def test_metafile_is_consistent():
    models, root = metafile_models()
    assert len(models) == 22
    for m in models:
        cfg_path = osp.join(root, m['Config'])
        assert osp.isfile(cfg_path), m['Config']
        assert osp.splitext(osp.basename(cfg_path))[0] == m['Name']
        assert isinstance(m['Metadata']['FLOPs'], int)
        assert isinstance(m['Metadata']['Parameters'], int)
        assert 'Weights' not in m  # nothing published yet
    # ... and the metafile says so, with what to do instead.
    with open(osp.join(root, 'configs', 'ddnn', 'metafile.yml')) as f:
        text = f.read()
    assert 'NO WEIGHTS ARE PUBLISHED YET' in text
    assert 'python tools/train.py configs/ddnn/NAME.py' in text
    assert "pretrained='work_dirs/NAME/epoch_N.pth'" in text


def test_metafile_costs_are_the_tools():
    # The digits entries (16x16: cheap to count) match net_costs.
    models, root = metafile_models()
    costs = {r['net']: r for r in net_costs(
        osp.join(root, 'configs', 'ddnn_demo_digits.py'))}
    digits = [m for m in models if m['Name'].endswith('_digits')]
    assert len(digits) == 3
    for m in digits:
        net = Config.fromfile(osp.join(root, m['Config'])).model.predict_net
        assert m['Metadata']['FLOPs'] == costs[net]['flops'], m['Name']
        assert m['Metadata']['Parameters'] == costs[net]['params']


@pytest.mark.slow
def test_family_metafile_costs_are_the_tools():
    # The ConvNeXt / Swin / DeiT entries (224x224) match net_costs of the
    # config they name, net by net (each DDNN counted once).
    models, root = metafile_models()
    family = [m for m in models if any(
        a in m['Name'] for a in ('convnext', 'swin', 'deit'))]
    assert len(family) == 7
    costs = {}
    for m in family:
        cfg = Config.fromfile(osp.join(root, m['Config']))
        key = repr(cfg.model.backbone)
        if key not in costs:
            costs[key] = {r['net']: r for r in net_costs(cfg)}
        row = costs[key][cfg.model.predict_net]
        assert row['input_size'] == (224, 224)
        assert m['Metadata']['FLOPs'] == row['flops'], m['Name']
        assert m['Metadata']['Parameters'] == row['params'], m['Name']
        assert m['Metadata']['Blocks per Stage'] == row['blocks'], m['Name']
    assert len(costs) == 3


def test_get_model_by_name(tmp_path):
    register_model_zoo()
    register_model_zoo()  # idempotent
    names = mmpretrain.list_models('ddnn-ekd*')
    assert DIGITS in names and len(names) == 22
    assert 'resnet18_8xb16_cifar10' in mmpretrain.list_models('resnet18*')

    index, root = model_index_path()
    source = randomize(build_model(
        osp.join(root, 'configs', 'ddnn_demo_digits.py')))
    ckpt = osp.join(tmp_path, 'digits.pth')
    torch.save(dict(state_dict=source.state_dict(), meta=dict(
        dataset_meta=dict(classes=tuple('0123456789')))), ckpt)
    model = mmpretrain.get_model(DIGITS, pretrained=ckpt)
    assert model.predict_net == 'sub1' and not model.eval_all_nets
    x = torch.randn(2, 3, 16, 16)
    assert_close(model(x), source.forward_nets(x, ['sub1'])[0]['sub1'])
    assert not torch.allclose(model(x), source.forward_nets(
        x, ['full'])[0]['full'], atol=1e-3)
    with pytest.raises(ValueError, match='Failed to find model'):
        mmpretrain.get_model('ddnn-ekd_resnet99_digits')


def test_pretrained_true_names_the_training_command():
    import mmekd
    mmekd.apis.register_model_zoo()  # the README's snippet, as written
    with pytest.raises(mmekd.apis.UnpublishedWeightsError) as err:
        mmpretrain.get_model(DIGITS, pretrained=True)
    msg = str(err.value)
    assert f'No pretrained weights are published for {DIGITS!r}' in msg
    assert f'python tools/train.py configs/ddnn/{DIGITS}.py' in msg
    # Epochs from the metafile name the last checkpoint of that run.
    assert f"pretrained='work_dirs/{DIGITS}/epoch_12.pth'" in msg
    index, root = model_index_path()
    assert osp.isfile(osp.join(root, 'configs', 'ddnn', f'{DIGITS}.py'))
    # Every mmekd entry fails the same way; MMPretrain's own keep theirs.
    from mmpretrain.apis import ModelHub
    for name in mmpretrain.list_models('ddnn-ekd*'):
        assert ModelHub.get(name).weights.startswith('mmekd-unpublished://')
    assert ModelHub.get('resnet18_8xb16_cifar10').weights.startswith('https')
    # An inferencer (pretrained=True by default) fails with the same message.
    from mmpretrain import ImageClassificationInferencer
    with pytest.raises(mmekd.apis.UnpublishedWeightsError,
                       match='tools/train.py'):
        ImageClassificationInferencer(DIGITS)

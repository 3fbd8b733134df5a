# Copyright (c) mmekd contributors. All rights reserved.
"""Exported models see image files in the channel order they were trained
on: a CIFAR config trains with to_rgb=False on RGB arrays, while files are
read as BGR."""
import json
import os
import os.path as osp
import pickle
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from PIL import Image
from torch.testing import assert_close

from mmekd.apis import (dataset_channel_order, export_to_files,
                        model_channel_order)
from mmekd.apis.channel_order import set_file_channel_order
from tiny_ddnn import randomize, write_checkpoint, write_config

PACK = [dict(type='PackInputs')]


def write_random_cifar100(root, per_class=4):
    """cifar-100-python/ with random pixels (the channels differ), images of
    the first 5 classes only (the tiny model's)."""
    folder = osp.join(root, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    labels = [c for _ in range(per_class) for c in range(5)]
    data = np.random.default_rng(0).integers(
        0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
    for name in ('train', 'test'):
        with open(osp.join(folder, name), 'wb') as f:
            pickle.dump({'data': data, 'fine_labels': labels}, f)
    with open(osp.join(folder, 'meta'), 'wb') as f:
        pickle.dump({'fine_label_names': [f'c{c}' for c in range(100)]}, f)
    return data.reshape(-1, 3, 32, 32)  # (N, C=RGB, H, W)


@pytest.fixture(scope='module')
def cifar_export(tmp_path_factory):
    """A tiny DDNN trained as the CIFAR configs are (to_rgb=False on RGB
    arrays), its checkpoint and its exported sub0."""
    tmp = str(tmp_path_factory.mktemp('channels'))
    images = write_random_cifar100(tmp)
    base = write_config(osp.join(tmp, 'base.py'))
    cfg_path = osp.join(tmp, 'cifar.py')
    dataset = dict(type='mmekd.CIFAR100', data_root=tmp, pipeline=PACK)
    with open(cfg_path, 'w') as f:
        f.write(
            f'_base_ = {base!r}\n'
            'data_preprocessor = dict(to_rgb=False)\n'
            f'train_dataloader = dict(dataset=dict(_delete_=True, '
            f'**{dict(dataset, split="train")!r}))\n'
            f'test_dataloader = dict(dataset=dict(_delete_=True, '
            f'**{dict(dataset, split="test")!r}))\n')
    ckpt, model = write_checkpoint(osp.join(tmp, 'cifar.pth'), cfg_path)
    # --data-dir: the images as files (stock MMPretrain reads them as BGR,
    # like any image file); without it mmekd.CIFAR100 becomes MMPretrain's
    # CIFAR100, which gives RGB arrays (see test_stock_cifar_is_flagged).
    out_cfg, out_ckpt = export_to_files(cfg_path, ckpt, 'sub0',
                                        osp.join(tmp, 'out'),
                                        data_dir=osp.join(tmp, 'images'))
    model.eval()
    return dict(tmp=tmp, images=images, cfg=cfg_path, ckpt=ckpt,
                model=model, out_cfg=out_cfg, out_ckpt=out_ckpt)


def ddnn_scores(model, chw_uint8, net='sub0'):
    """The DDNN model's scores on a training tensor, as in training."""
    model.predict_net, model.eval_all_nets = net, False
    with torch.no_grad():
        return model.test_step(dict(inputs=[chw_uint8]))[0].pred_score


def test_inferencer_on_png_equals_model_on_training_tensor(cifar_export):
    import mmpretrain
    e = cifar_export
    rgb = e['images'][3]  # (3, 32, 32), as the dataset gives it
    png = osp.join(e['tmp'], 'img.png')
    Image.fromarray(rgb.transpose(1, 2, 0)).save(png)  # an RGB image file
    expected = ddnn_scores(e['model'], torch.from_numpy(rgb))
    inferencer = mmpretrain.ImageClassificationInferencer(
        e['out_cfg'], pretrained=e['out_ckpt'])
    got = torch.as_tensor(inferencer(png)[0]['pred_scores'])
    assert_close(got, expected, rtol=0, atol=1e-6)
    # The check can fail: the same pixels with red and blue swapped score
    # differently (what the inferencer gave before the fix).
    swapped = ddnn_scores(e['model'], torch.from_numpy(rgb[::-1].copy()))
    assert not torch.allclose(got, swapped, atol=1e-4)


def test_exported_config_records_and_applies_the_order(cifar_export):
    e = cifar_export
    exported = Config.fromfile(e['out_cfg'])
    assert exported.model.data_preprocessor.to_rgb is True
    assert exported.data_preprocessor.to_rgb is True
    for key in ('train_dataloader', 'test_dataloader'):
        # Image files, read as BGR by the pipeline the inferencer runs too.
        assert exported[key].dataset.type == 'CustomDataset', key
        assert exported[key].dataset.pipeline[0].type == 'LoadImageFromFile'
    meta = torch.load(e['out_ckpt'], weights_only=True)['meta']
    assert meta['mmekd_export']['channel_order'] == 'rgb'
    text = open(e['out_cfg']).read()
    assert '# The model was trained on RGB input: image files, read as ' \
        'BGR, are flipped by the data preprocessor (to_rgb=True).' in text


def test_exported_config_tests_as_the_ddnn(cifar_export):
    """Its dataloader (the images as files) and model (to_rgb=True) give
    the DDNN's scores on the same images as it saw them in training."""
    import mmpretrain
    e = cifar_export
    exported = Config.fromfile(e['out_cfg'])
    plain = mmpretrain.get_model(exported, pretrained=e['out_ckpt']).eval()
    with DefaultScope.overwrite_default_scope(exported.default_scope):
        loader = Runner.build_dataloader(
            dict(exported.test_dataloader, batch_size=8, num_workers=0))
    batch = next(iter(loader))
    with torch.no_grad():
        got = torch.stack([s.pred_score for s in plain.test_step(batch)])
    # The loader gives the files as read (BGR); the DDNN saw them as RGB.
    expected = torch.stack([
        ddnn_scores(e['model'], img.flip(0)) for img in batch['inputs']])
    assert_close(got, expected, rtol=0, atol=1e-6)


def test_stock_cifar_is_flagged(cifar_export, tmp_path):
    """Without --data-dir the exported config uses MMPretrain's CIFAR100
    (RGB arrays) while the model takes files' BGR order: said in the
    header and as a warning."""
    e = cifar_export
    with pytest.warns(UserWarning, match=r"\['CIFAR100'\] give RGB arrays"):
        out_cfg, _ = export_to_files(e['cfg'], e['ckpt'], 'sub0',
                                     str(tmp_path / 'out'))
    text = open(out_cfg).read()
    assert '--data-dir' in text and 'swaps red and blue' in text
    assert Config.fromfile(out_cfg).model.data_preprocessor.to_rgb is True


def test_onnx_metadata_prepares_a_png_as_in_training(cifar_export,
                                                     monkeypatch):
    from tool_loader import load_tool

    from mmekd.apis import onnx_logits
    e = cifar_export
    out = osp.join(e['tmp'], 'sub0.onnx')
    monkeypatch.setattr(sys, 'argv', [
        'export_onnx.py', e['cfg'], e['ckpt'], out, '--net', 'sub0'])
    load_tool('deploy/export_onnx').main()
    import onnx
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta['channel_order'] == 'rgb' and meta['to_rgb'] == 'True'
    rgb = e['images'][5]
    png = osp.join(e['tmp'], 'onnx.png')
    Image.fromarray(rgb.transpose(1, 2, 0)).save(png)
    img = cv2.imread(png).astype(np.float32)  # BGR, as OpenCV reads it
    if meta['to_rgb'] == 'True':
        img = img[..., ::-1]
    img = (img - json.loads(meta['mean'])) / json.loads(meta['std'])
    x = torch.from_numpy(img.transpose(2, 0, 1)[None].astype(np.float32))
    model = e['model']
    with torch.no_grad():
        train_x = model.data_preprocessor(
            dict(inputs=[torch.from_numpy(rgb)]))['inputs']
        expected = model.forward_nets(train_x, ['sub0'])[0]['sub0']
    np.testing.assert_allclose(onnx_logits(out, x), expected.numpy(),
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize('dataset, order', [
    (dict(type='ImageNet', pipeline=[dict(type='LoadImageFromFile'), *PACK]),
     'bgr'),
    (dict(type='CustomDataset', pipeline=[
        dict(type='LoadImageFromFile', color_type='grayscale'), *PACK]),
     'grey'),
    (dict(type='mmekd.CIFAR100', pipeline=PACK), 'rgb'),
    (dict(type='mmekd.CIFAR100', channel_order='bgr'), 'bgr'),
    (dict(type='CIFAR10', pipeline=PACK), 'rgb'),
    (dict(type='mmekd.Digits'), 'grey'),
    (dict(type='mmekd.InMemoryBatchDataset',
          dataset=dict(type='mmekd.CIFAR100', pipeline=PACK)), 'rgb'),
    (dict(type='ConcatDataset', datasets=[
        dict(type='CIFAR10'), dict(type='CIFAR100')]), 'rgb'),
    (dict(type='ConcatDataset', datasets=[
        dict(type='CIFAR10'), dict(type='ImageNet', pipeline=[
            dict(type='LoadImageFromFile')])]), None),
    (dict(type='MyArrays', pipeline=PACK), None),
])
def test_dataset_channel_order(dataset, order):
    assert dataset_channel_order(dataset) == order


@pytest.mark.parametrize('source, to_rgb, order', [
    (dict(type='mmekd.CIFAR100'), False, 'rgb'),
    (dict(type='mmekd.CIFAR100'), True, 'bgr'),
    (dict(type='mmekd.CIFAR100', channel_order='bgr'), True, 'rgb'),
    (dict(type='ImageNet', pipeline=[dict(type='LoadImageFromFile')]), True,
     'rgb'),
    (dict(type='ImageNet', pipeline=[dict(type='LoadImageFromFile')]), False,
     'bgr'),
    (dict(type='Digits'), True, 'grey'),
])
def test_model_channel_order_and_exported_to_rgb(source, to_rgb, order):
    cfg = dict(train_dataloader=dict(dataset=source),
               data_preprocessor=dict(to_rgb=to_rgb))
    assert model_channel_order(cfg) == order
    plain = dict(data_preprocessor=dict(to_rgb=to_rgb, mean=[1, 2, 3]))
    assert set_file_channel_order(plain, cfg) == order
    # Image files are BGR: flip them iff the model was trained on RGB.
    expected = to_rgb if order == 'grey' else order == 'rgb'
    assert plain['data_preprocessor'] == dict(to_rgb=expected,
                                              mean=[1, 2, 3])


def test_default_preprocessor_gets_to_rgb():
    cfg = dict(train_dataloader=dict(dataset=dict(type='mmekd.CIFAR10')))
    plain = dict(type='ImageClassifier')
    assert set_file_channel_order(plain, cfg) == 'rgb'
    assert plain['data_preprocessor'] == dict(to_rgb=True)
    from mmpretrain.models import ImageClassifier
    model = ImageClassifier(
        backbone=dict(type='ResNet_CIFAR', depth=18, base_channels=4,
                      stem_channels=4),
        data_preprocessor=plain['data_preprocessor'])
    assert model.data_preprocessor.to_rgb is True


def test_stock_rgb_arrays_warn_and_keep_to_rgb():
    cfg = dict(train_dataloader=dict(dataset=dict(type='CIFAR100')),
               data_preprocessor=dict(to_rgb=False))
    plain = dict(data_preprocessor=dict(to_rgb=False))
    with pytest.warns(UserWarning, match=r"datasets \['CIFAR100'\] give RGB "
                      'arrays.*use mmekd.CIFAR10 or mmekd.CIFAR100'):
        assert set_file_channel_order(plain, cfg) is None
    assert plain == dict(data_preprocessor=dict(to_rgb=False))


def test_unknown_order_warns_and_keeps_to_rgb():
    cfg = dict(train_dataloader=dict(dataset=dict(type='MyArrays')),
               data_preprocessor=dict(to_rgb=False))
    plain = dict(data_preprocessor=dict(to_rgb=False))
    with pytest.warns(UserWarning, match="dataset 'MyArrays' has no "
                      'LoadImageFromFile.*check it before inferring'):
        assert set_file_channel_order(plain, cfg) is None
    assert plain == dict(data_preprocessor=dict(to_rgb=False))


def _sensitive_checkpoint(cfg, images, path):
    """A random model whose sub0 prediction depends on the image (its
    classifier's bias centres the logits of ``images``, its weights scaled
    up), saved as a checkpoint; and that model."""
    from mmekd.apis import build_model
    model = randomize(build_model(cfg), seed=1)
    model.predict_net, model.eval_all_nets = 'sub0', False
    with torch.no_grad():
        x = model.data_preprocessor(
            dict(inputs=[torch.from_numpy(i.copy()) for i in images]))
        logits = model.forward_nets(x['inputs'], ['sub0'])[0]['sub0']
        fc = model.head.fc
        fc.bias.sub_(logits.mean(0)).mul_(100)
        fc.weight.mul_(100)
    return write_checkpoint(path, cfg, model)


def _labelled_by(model, images, root):
    """cifar-100-python/ with ``images`` (RGB, as CIFAR stores them)
    labelled with the DDNN's sub0 predictions: 100 % top-1 when the
    channels reach the model as in training."""
    labels = [int(ddnn_scores(model, torch.from_numpy(img)).argmax())
              for img in images]
    swapped = [int(ddnn_scores(model, torch.from_numpy(
        img[::-1].copy())).argmax()) for img in images]
    # Red and blue swapped would lose accuracy: the check can fail.
    assert sum(a != b for a, b in zip(labels, swapped)) >= len(images) // 4
    folder = osp.join(root, 'cifar-100-python')
    os.makedirs(folder)
    for name in ('train', 'test'):
        with open(osp.join(folder, name), 'wb') as f:
            pickle.dump({'data': images.reshape(len(images), -1),
                         'fine_labels': labels}, f)
    with open(osp.join(folder, 'meta'), 'wb') as f:
        pickle.dump({'fine_label_names': [f'c{c}' for c in range(100)]}, f)


@pytest.mark.slow
def test_stock_test_script_gives_mmekd_numbers(cifar_export, tmp_path):
    """MMPretrain's own tools/test.py (it ships inside the installed
    package) on an export with --data-dir gives exactly what mmekd's
    tools/test.py gives for the same net, on colour images."""
    import subprocess

    import mmpretrain
    from tool_loader import REPO, tool_path
    e = cifar_export
    ckpt, model = _sensitive_checkpoint(e['cfg'], e['images'],
                                        str(tmp_path / 'sensitive.pth'))
    _labelled_by(model.eval(), e['images'], str(tmp_path / 'data'))
    cfg = str(tmp_path / 'labelled.py')
    with open(cfg, 'w') as f:
        f.write(f'_base_ = {e["cfg"]!r}\n'
                f'_data = dict(data_root={str(tmp_path / "data")!r})\n'
                'train_dataloader = dict(dataset=_data)\n'
                'test_dataloader = dict(dataset=_data)\n'
                # (what a training config has: the runner wants all three)
                'train_cfg = dict(max_epochs=1)\n'
                "optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))\n")

    def run(*argv):
        proc = subprocess.run([sys.executable, *argv], capture_output=True,
                              text=True, cwd=REPO,
                              env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    ours, theirs = str(tmp_path / 'ours.json'), str(tmp_path / 'theirs.json')
    run(tool_path('test'), cfg, ckpt, '--net', 'sub0', '--work-dir',
        str(tmp_path / 'w_ours'), '--out', ours, '--out-item', 'metrics')
    out = str(tmp_path / 'export')
    run(tool_path('export_subnet'), cfg, ckpt, out, '--net', 'sub0',
        '--data-dir', str(tmp_path / 'images'))
    exported = osp.join(out, 'labelled_sub0-resnet18')
    stock_test = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools',
                          'test.py')
    run(stock_test, exported + '.py', exported + '.pth', '--work-dir',
        str(tmp_path / 'w_theirs'), '--out', theirs, '--out-item', 'metrics')
    with open(ours) as f, open(theirs) as g:
        ours, theirs = json.load(f), json.load(g)
    assert ours['sub0/top1'] == 100.0
    assert theirs['accuracy/top1'] == ours['sub0/top1']


def test_file_colours():
    """An RGB array is written in OpenCV's BGR (true colours on disk); a
    colour array of unknown order is refused rather than guessed."""
    from mmekd.apis.channel_order import ChannelOrderError, to_file_colours
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255  # red
    assert to_file_colours(rgb, 'rgb')[0, 0].tolist() == [0, 0, 255]
    assert to_file_colours(rgb, 'bgr') is rgb
    assert to_file_colours(rgb[..., 0], None) is not None  # grey: no order
    with pytest.raises(ChannelOrderError, match='true colours'):
        to_file_colours(rgb, None)

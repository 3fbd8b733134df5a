# Copyright (c) mmekd contributors. All rights reserved.
"""configs/ddnn_r34_custom_folder.py (docs/custom_data.md): a DDNN on an
ImageNet-style folder of PNGs builds and trains with tools/train.py."""
import glob
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from tool_loader import REPO, load_tool

CONFIG = osp.join(REPO, 'configs', 'ddnn_r34_custom_folder.py')
CLASSES = ('cat', 'dog', 'fox')


def write_folder(root, per_class):
    """``root/<split>/<class>/<i>.png``: random 40x48 colour images."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for c in CLASSES:
            for i in range(n):
                path = osp.join(root, split, c, f'{i}.png')
                os.makedirs(osp.dirname(path), exist_ok=True)
                cv2.imwrite(path, rng.integers(0, 256, (40, 48, 3),
                                               dtype=np.uint8))
    return root


@pytest.fixture
def folder(tmp_path, monkeypatch):
    root = write_folder(str(tmp_path / 'data'), dict(train=2, val=1))
    monkeypatch.setenv('DATA_ROOT', root)
    monkeypatch.setenv('NUM_CLASSES', str(len(CLASSES)))
    return root


def test_config_reads_the_folder(folder):
    cfg = Config.fromfile(CONFIG)
    assert cfg.model.head.num_classes == 3
    assert cfg.data_preprocessor.num_classes == 3
    assert cfg.val_evaluator.topk == (1, )  # 3 classes: no top-5
    from mmpretrain.registry import DATASETS
    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    assert train.metainfo['classes'] == CLASSES
    assert len(train) == 6 and len(val) == 3
    assert [train.get_data_info(i)['gt_label'] for i in range(6)] == \
        [0, 0, 1, 1, 2, 2]
    sample = train[0]
    assert tuple(sample['inputs'].shape) == (3, 224, 224)


def test_trains_one_iteration_from_torchvision_weights(folder, tmp_path,
                                                       monkeypatch, capsys):
    """The recipe of docs/custom_data.md: torchvision ResNet-34 weights
    (random here: no download) without their classifier, then training."""
    torchvision = pytest.importorskip('torchvision')
    tv = torchvision.models.resnet34(weights=None)
    tv_path = str(tmp_path / 'resnet34.pth')
    torch.save(tv.state_dict(), tv_path)
    pretrained = str(tmp_path / 'ddnn_init.pth')
    monkeypatch.setattr(sys, 'argv', [
        'convert_torchvision.py', CONFIG, tv_path, pretrained, '--no-head'])
    load_tool('convert_torchvision').main()
    work = str(tmp_path / 'work')
    # lr 0: the weights after the iteration are those loaded.
    monkeypatch.setattr(sys, 'argv', [
        'train.py', CONFIG, '--work-dir', work, '--cfg-options',
        f'load_from={pretrained}', 'optim_wrapper.optimizer.lr=0',
        'train_dataloader.batch_size=6', 'train_dataloader.num_workers=0',
        'val_dataloader.num_workers=0', 'train_cfg.max_epochs=1',
        'default_hooks.logger.interval=1'])
    torch.manual_seed(0)
    load_tool('train').main()
    out = capsys.readouterr().out
    ckpt = torch.load(osp.join(work, 'epoch_1.pth'), map_location='cpu',
                      weights_only=False)
    assert ckpt['meta']['iter'] == 1
    assert ckpt['meta']['dataset_meta']['classes'] == CLASSES
    assert ckpt['state_dict']['head.fc.weight'].shape == (3, 512)
    for key in ('conv1.weight', 'layer4.2.conv2.weight'):
        assert torch.equal(ckpt['state_dict']['backbone.' + key],
                           tv.state_dict()[key]), key
    scalars = glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))
    logs = [json.loads(line) for line in open(scalars[0])]
    train_log = next(r for r in logs if 'loss' in r)
    assert np.isfinite(train_log['loss']) and train_log['loss'] > 0
    # The full net and its ResNet-18 sub-net both train and are validated.
    for key in ('loss_ce_full', 'loss_ce_sub0', 'loss_kl_sub0'):
        assert np.isfinite(train_log[key]), (key, sorted(train_log))
    val_log = next(r for r in logs if 'full/top1' in r)
    assert 'sub0/top1' in val_log
    assert '| full |' in out and '| sub0 |' in out

# Copyright (c) mmekd contributors. All rights reserved.
"""Clear messages for the mistakes users make: wrong numbers in a config,
labels outside the head, a head that does not fit the backbone, a wrong
``--resume``, a directory or a diverged checkpoint."""
import argparse
import os
import os.path as osp
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.model import MMDistributedDataParallel
from mmpretrain.structures import DataSample

import mmekd  # noqa: F401
from mmekd.evaluation import format_net_table
from mmekd.registry import MODELS
from mmekd.utils import NonFiniteStateError, safe_load
from tool_loader import load_tool

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', 'test_apis'))
from tiny_ddnn import tiny_model_files  # noqa: E402


@pytest.mark.parametrize('cfg, match', [
    (dict(type='mmekd.KLDivLoss', loss_weight='1.0'),
     r"KLDivLoss.loss_weight must be a number, got '1.0' \(str\)"),
    (dict(type='mmekd.KLDivLoss', tau=-2),
     r'KLDivLoss.tau must be a finite number > 0, got -2'),
    (dict(type='mmekd.AttentionTransferLoss', loss_weight=True),
     r'AttentionTransferLoss.loss_weight must be a number, got True'),
    (dict(type='mmekd.AttentionTransferLoss', loss_weight=float('nan')),
     r'AttentionTransferLoss.loss_weight must be a finite number >= 0'),
    (dict(type='mmekd.MultiNetClsHead', num_classes=3, in_channels=4,
          loss=dict(type='CrossEntropyLoss', loss_weight='2')),
     r"head.loss.loss_weight \(CrossEntropyLoss\) must be a number"),
])
def test_numbers_in_loss_configs_are_checked(cfg, match):
    with pytest.raises((TypeError, ValueError), match=match):
        MODELS.build(cfg)


def _batch(labels, size=16):
    return dict(
        inputs=torch.rand(len(labels), 3, size, size) * 255,
        data_samples=[DataSample().set_gt_label(int(i)) for i in labels])


def test_label_outside_num_classes_names_the_field(tiny_ddnn_cfg):
    model = MODELS.build(tiny_ddnn_cfg)  # 3 classes
    with pytest.raises(ValueError,
                       match=r'the batch has label 7, but '
                       r'head.num_classes=3 \(labels must be 0..2\): set '
                       r'model.head.num_classes'):
        model.train_step(_batch([0, 7, 1, 2]), _optim_wrapper(model))
    model.train_step(_batch([0, 1, 2, 1]), _optim_wrapper(model))


def test_head_in_channels_that_do_not_fit_the_backbone(tiny_ddnn_cfg):
    tiny_ddnn_cfg['head']['in_channels'] = 64  # the backbone gives 32
    model = MODELS.build(tiny_ddnn_cfg)
    with pytest.raises(ValueError,
                       match=r"head.in_channels=64, but the features of net "
                       r"'full' \(backbone \+ neck output\) have shape "
                       r'\(4, 32\): set model.head.in_channels=32'):
        model.train_step(_batch([0, 1, 2, 1]), _optim_wrapper(model))


def _optim_wrapper(model):
    from mmekd.engine.optim import SafeOptimWrapper
    return SafeOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))


def test_net_table_unwraps_ddp(tiny_ddnn_cfg):
    model = MODELS.build(tiny_ddnn_cfg)
    wrapper = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    nn.Module.__init__(wrapper)
    wrapper.module = model
    metrics = {'full/top1': 50.0, 'sub0/top1': 40.0}
    assert format_net_table(metrics, wrapper) == format_net_table(
        metrics, model)
    assert '| sub0 | [1, 1, 1, 1] | 40.00 |' in format_net_table(
        metrics, wrapper)


def test_resume_messages(tmp_path, capsys):
    train = load_tool('train')
    train.report_auto_resume(str(tmp_path))
    assert (f'no checkpoint found in {tmp_path} (no last_checkpoint file): '
            'training starts from scratch') in capsys.readouterr().out

    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'gone.pth'))
    with pytest.raises(SystemExit, match=r'names .*gone\.pth, which does '
                       'not exist'):
        train.report_auto_resume(str(tmp_path))

    with pytest.raises(SystemExit, match=r'is a directory, not a checkpoint '
                       'file'):
        train.check_resume_checkpoint(str(tmp_path))
    weights = tmp_path / 'weights.pth'
    torch.save({'conv.weight': torch.zeros(2)}, weights)
    with pytest.raises(SystemExit, match=r'weights\.pth is not a training '
                       r'checkpoint .* use --cfg-options load_from=.*'
                       'without --resume'):
        train.check_resume_checkpoint(str(weights))
    run = tmp_path / 'run.pth'
    torch.save(dict(meta=dict(epoch=1, iter=10), state_dict={}), run)
    train.check_resume_checkpoint(str(run))  # a training checkpoint


def test_directory_as_checkpoint(tmp_path):
    with pytest.raises(IsADirectoryError, match='is a directory, not a '
                       'checkpoint file'):
        safe_load(str(tmp_path))
    test = load_tool('test')
    args = argparse.Namespace(
        launcher='none', work_dir=str(tmp_path), checkpoint=str(tmp_path),
        config='x.py')
    from mmengine.config import Config
    with pytest.raises(SystemExit, match='is a directory, not a checkpoint'):
        test.merge_args(Config(dict()), args)


def test_nonfinite_checkpoint_is_named_for_export_and_test(tmp_path):
    from mmekd.apis import load_ddnn_model
    cfg_path, ckpt_path, model = tiny_model_files(str(tmp_path))
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt['state_dict']['backbone.layer2.0.conv1.weight'][0, 0] = float('inf')
    ckpt['state_dict']['head.fc.bias'][1] = float('nan')
    bad = os.path.join(str(tmp_path), 'diverged.pth')
    torch.save(ckpt, bad)
    with pytest.raises(NonFiniteStateError,
                       match=r'diverged\.pth has NaN or infinite values in 2 '
                       r'of \d+ tensors: backbone\.layer2\.0\.conv1\.weight, '
                       r'head\.fc\.bias'):
        load_ddnn_model(cfg_path, bad)
    from mmengine.runner import load_checkpoint
    with pytest.raises(NonFiniteStateError, match=r'diverged\.pth'):
        load_checkpoint(model, bad)

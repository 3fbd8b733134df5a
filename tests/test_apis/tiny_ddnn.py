# Copyright (c) mmekd contributors. All rights reserved.
"""A tiny DDNN config and checkpoint for the export / deploy tests.

CIFAR-style ResNet-34 with 8 base channels on 16x16 images: sub0 is a
standard ResNet-18 ``[2, 2, 2, 2]``, sub1 ``[1, 2, 1, 1]`` is not standard.
"""
import os.path as osp

import torch
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

CLASSES = ('a', 'b', 'c', 'd', 'e')

TINY_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmekd'], allow_failed_imports=False)
model = dict(
    type='mmekd.DDNNClassifier',
    backbone=dict(
        type='{backbone}',
        depth=34,
        stem_channels=8,
        base_channels=8,
        sub_depths={sub_depths},
        block_choice='{block_choice}',
        private_norm={private_norm!r},
        out_indices=(0, 1, 2, 3)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='mmekd.MultiNetClsHead',
        num_classes={num_classes},
        in_channels=64,
        private_fc={private_fc},
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
data_preprocessor = dict(
    num_classes={num_classes}, mean=[120.0, 110.0, 100.0],
    std=[60.0, 50.0, 40.0], to_rgb=True)
test_pipeline = [dict(type='PackInputs')]
train_pipeline = [dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(type='mmekd.Digits', split='train', pipeline=[
        dict(type='Resize', scale=(16, 16)), dict(type='PackInputs')]),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(type='mmekd.Digits', split='val', pipeline=[
        dict(type='Resize', scale=(16, 16)), dict(type='PackInputs')]),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, ))
test_cfg = dict()
"""


def write_config(path, sub_depths=((2, 2, 2, 2), (1, 2, 1, 1)),
                 private_norm=False, private_fc=False, num_classes=5,
                 block_choice='first', cifar=True):
    text = TINY_CONFIG.format(
        backbone='mmekd.DepthDynamicResNetCIFAR'
        if cifar else 'mmekd.DepthDynamicResNet',
        sub_depths=[list(s) for s in sub_depths],
        block_choice=block_choice,
        private_norm=private_norm,
        private_fc=private_fc,
        num_classes=num_classes)
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def randomize(model, seed=0):
    """Random BatchNorm statistics/affine values (every private copy gets its
    own) and a random head, so that a wrong tensor shows in the logits."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                n = m.num_features
                if m.affine:  # (a PrivateStatsBatchNorm2d's statistics)
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
        for p in model.head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model


def write_checkpoint(path, config_path, model=None, seed=0):
    """A training-style checkpoint (optimizer, message hub, the config text
    in ``meta['cfg']``) of a randomized model built from ``config_path``."""
    from mmekd.apis import build_model
    if model is None:
        model = randomize(build_model(config_path), seed)
    cfg = Config.fromfile(config_path)
    ckpt = dict(
        meta=dict(
            cfg=cfg.pretty_text,
            dataset_meta=dict(classes=CLASSES),
            epoch=3,
            iter=30),
        state_dict=model.state_dict(),
        optimizer=dict(state={}, param_groups=[dict(lr=0.1)]),
        message_hub=dict(log_scalars={}, runtime_info=dict(epoch=3)))
    torch.save(ckpt, path)
    return str(path), model


def tiny_model_files(tmp_path, **kwargs):
    """Write the tiny config and a checkpoint; return their paths and the
    model."""
    cfg_path = write_config(osp.join(tmp_path, 'tiny_ddnn.py'), **kwargs)
    ckpt_path, model = write_checkpoint(
        osp.join(tmp_path, 'tiny_ddnn.pth'), cfg_path)
    return cfg_path, ckpt_path, model

# Copyright (c) mmekd contributors. All rights reserved.
"""configs/ddnn_{convnext-small,swin-small,deit-small}_in1k.py: MMPretrain's
own ImageNet recipes (``mmpretrain::`` bases) turned into DDNN runs. They
keep the recipe, train one iteration with ``tools/train.py`` on a tiny
ImageNet-style folder, and export ``sub0`` to the stock MMPretrain model
whose logits are the DDNN's ``sub0`` logits."""
import os
import os.path as osp
import subprocess
import sys

import cv2
import mmpretrain
import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmekd  # noqa: F401  (registers the mmpretrain:: package lookup)
from mmekd.apis import export_to_files, load_ddnn_model, read_checkpoint
from mmekd.apis.stock_config import mmekd_types
from mmekd.models.plain_net import build_plain
from test_from_mmpretrain_config import check_safety_hooks, without_scope
from tool_loader import REPO

STOCK_ROOT = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs')
# config -> (stock recipe, stock backbone type, sub-nets' blocks, sub0's
# stock arch)
FAMILIES = {
    'ddnn_convnext-small_in1k.py':
    ('convnext/convnext-small_32xb128_in1k.py', 'ConvNeXt',
     [[3, 3, 9, 3]], 'tiny'),
    'ddnn_swin-small_in1k.py':
    ('swin_transformer/swin-small_16xb64_in1k.py', 'SwinTransformer',
     [[2, 2, 6, 2]], 'tiny'),
    'ddnn_deit-small_in1k.py':
    ('deit/deit-small_4xb256_in1k.py', 'VisionTransformer', [[6], [9]],
     dict(embed_dims=384, num_layers=6, num_heads=6,
          feedforward_channels=1536)),
}


@pytest.mark.parametrize('name', FAMILIES)
def test_keeps_the_stock_recipe(name):
    stock_path, stock_type, subs, _ = FAMILIES[name]
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    stock = Config.fromfile(osp.join(STOCK_ROOT, stock_path))
    for key in ('param_scheduler', 'train_cfg', 'data_preprocessor',
                'auto_scale_lr'):
        assert without_scope(cfg[key]) == without_scope(stock[key]), key
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert without_scope(cfg[key]) == without_scope(stock[key]), key
    # EMAHook (ConvNeXt) and no other custom hook.
    assert without_scope(cfg.get('custom_hooks')) == without_scope(
        stock.get('custom_hooks'))
    # The same optimizer and clip_grad, in the wrapper the memory-efficient
    # step needs.
    assert cfg.optim_wrapper.type == 'mmekd.SafeOptimWrapper'
    assert without_scope({**cfg.optim_wrapper, 'type': None}) == \
        without_scope({**stock.optim_wrapper, 'type': None})
    # The stock model's arguments (arch, drop path, Mixup/CutMix, loss,
    # init) on the DDNN's types.
    model, ref = without_scope(cfg.model), without_scope(stock.model)
    assert model.pop('type') == 'mmekd.DDNNClassifier'
    assert ref.pop('type') == 'ImageClassifier'
    backbone, ref_backbone = model.pop('backbone'), ref.pop('backbone')
    assert backbone.pop('type') == f'mmekd.DepthDynamic{stock_type}'
    assert ref_backbone.pop('type') == stock_type
    assert backbone.pop('sub_stage_blocks') == subs
    assert backbone.pop('drop_path', 'per_net') == 'per_net'
    assert backbone == ref_backbone
    head, ref_head = model.pop('head'), ref.pop('head')
    assert head.pop('type') == 'mmekd.MultiNetClsHead'
    if ref_head.pop('type') == 'VisionTransformerClsHead':
        # The stock head's initialisation, which is its class default.
        assert head.pop('init_cfg') == dict(type='Constant', layer='Linear',
                                            val=0)
    assert head == ref_head
    assert model == ref
    assert without_scope(cfg.val_evaluator) == dict(
        type='mmekd.MultiNetAccuracy', topk=[1, 5])
    assert cfg.model_wrapper_cfg.type == 'mmekd.DDNNDistributedDataParallel'
    check_safety_hooks(cfg, stock)


def write_image_folder(root):
    """``root/{train,val}/<class>/``: two classes, JPEG and PNG."""
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for cls, ext in (('n01', 'jpg'), ('n02', 'png')):
            path = osp.join(root, split, cls, f'0.{ext}')
            os.makedirs(osp.dirname(path), exist_ok=True)
            cv2.imwrite(path, rng.integers(0, 256, (72, 96, 3),
                                           dtype=np.uint8))
    return root


def tiny_run_config(name, data_root, path):
    """The config on the folder (``CustomDataset``), batch 2, no worker
    processes, one epoch (one iteration) with the recipe's warm-up only."""
    text = f"""_base_ = [{osp.join(REPO, 'configs', name)!r}]
folder = dict(_delete_=True, type='CustomDataset', data_root={data_root!r})
loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
train_dataloader = dict(loader, dataset=dict(
    folder, data_prefix='train', pipeline={{{{_base_.train_pipeline}}}}))
val_dataloader = dict(loader, dataset=dict(
    folder, data_prefix='val', pipeline={{{{_base_.test_pipeline}}}}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1)
param_scheduler = [dict(type='LinearLR', start_factor=1e-3, by_epoch=True,
                        end=1, convert_to_iter_based=True)]
default_hooks = dict(checkpoint=dict(save_optimizer=False))
"""
    with open(path, 'w') as f:
        f.write(text)
    return path


@pytest.mark.slow
@pytest.mark.parametrize('name', FAMILIES)
def test_trains_one_iteration_and_exports_sub0(name, tmp_path):
    """tools/train.py trains one iteration of every net; sub0 of the
    checkpoint (randomised: at iteration 1 ConvNeXt's layer scale 1e-6 and
    DeiT's zero-initialised classifier make every net nearly the same)
    exports to the stock model, whose logits are the DDNN's sub0 logits."""
    _, stock_type, _, sub0_arch = FAMILIES[name]
    data_root = write_image_folder(str(tmp_path / 'data'))
    config = tiny_run_config(name, data_root, str(tmp_path / 'tiny.py'))
    work = tmp_path / 'work'
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), config,
         '--work-dir', str(work)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'Epoch(train) [1][1/1]' in out, out[-3000:]
    nets = ['full', 'sub0', 'sub1'][:len(FAMILIES[name][2]) + 1]
    for net in nets:  # the per-net validation table
        assert f'| {net} |' in proc.stdout, proc.stdout[-2000:]
    for term in ['loss_ce_full'] + [f'loss_{t}_{n}' for n in nets[1:]
                                    for t in ('ce', 'kl', 'at')]:
        assert f'{term}: ' in out, term

    state_dict, meta = read_checkpoint(str(work / 'epoch_1.pth'))
    gen = torch.Generator().manual_seed(0)
    state_dict = {
        k: v + 0.1 * torch.randn(v.shape, generator=gen)
        if v.is_floating_point() else v
        for k, v in state_dict.items()
    }
    ckpt = str(tmp_path / 'randomised.pth')
    torch.save(dict(state_dict=state_dict, meta=meta), ckpt)
    cfg_path, ckpt_path = export_to_files(config, ckpt, 'sub0',
                                          str(tmp_path / 'export'))
    exported = Config.fromfile(cfg_path)
    assert mmekd_types(exported.to_dict()) == []
    assert exported.model.backbone.type == stock_type
    assert exported.model.backbone.arch == sub0_arch
    plain = build_plain(exported.model.to_dict())
    plain.load_state_dict(
        torch.load(ckpt_path, weights_only=True)['state_dict'])
    plain.eval()
    ddnn = load_ddnn_model(config, ckpt)
    x = torch.randn(2, 3, 224, 224, generator=gen)
    with torch.no_grad():
        logits, _ = ddnn.forward_nets(x, ['full', 'sub0'])
        stock_logits = plain(x, mode='tensor')
    assert (stock_logits - logits['sub0']).abs().max() <= 1e-5
    # Not a vacuous match: the nets differ, the logits are not ~0.
    assert (logits['full'] - logits['sub0']).abs().max() > 1e-2
    assert logits['sub0'].abs().max() > 1e-1


# config -> MMPretrain's model of the same full arch (its published
# ImageNet weights are for this name; built here with random weights).
STOCK_MODELS = {
    'ddnn_convnext-small_in1k.py': 'convnext-small_32xb128_in1k',
    'ddnn_swin-small_in1k.py': 'swin-small_16xb64_in1k',
    'ddnn_deit-small_in1k.py': 'deit-small_4xb256_in1k',
}


@pytest.mark.slow
@pytest.mark.parametrize('name', STOCK_MODELS)
def test_stock_imagenet_checkpoint_loads_into_the_full_net(name, tmp_path):
    """A checkpoint of MMPretrain's classifier of the full arch, in its
    published layout, loaded as ``load_from`` does: every backbone key
    matches; the head too, except DeiT's (``head.layers.head.*``, renamed
    to ``head.fc.*`` here); then the full net computes the stock logits."""
    stock = mmpretrain.get_model(STOCK_MODELS[name])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random values: no block the identity
        for p in stock.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    path = str(tmp_path / 'stock.pth')
    torch.save(dict(meta=dict(mmpretrain_version=mmpretrain.__version__),
                    state_dict=stock.state_dict()), path)
    model = load_ddnn_model(osp.join(REPO, 'configs', name))
    state_dict, _ = read_checkpoint(path)
    result = model.load_state_dict(state_dict, strict=False)
    head_keys = {'head.layers.head.weight', 'head.layers.head.bias'}
    is_deit = 'deit' in name
    assert set(result.unexpected_keys) == (head_keys if is_deit else set())
    # Missing: DeiT's classifier only (no per-net copies in these families).
    assert set(result.missing_keys) == (
        {'head.fc.weight', 'head.fc.bias'} if is_deit else set())
    if is_deit:
        for key in ('weight', 'bias'):
            state_dict[f'head.fc.{key}'] = state_dict.pop(
                f'head.layers.head.{key}')
        model.load_state_dict(state_dict, strict=True)
    stock.eval(), model.eval()
    x = torch.randn(2, 3, 224, 224, generator=gen)
    with torch.no_grad():
        logits, want = model(x), stock(x)
    assert want.abs().max() > 1  # not a vacuous match
    assert (logits - want).abs().max() <= 1e-5

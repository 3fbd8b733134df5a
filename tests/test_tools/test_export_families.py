# Copyright (c) mmekd contributors. All rights reserved.
"""Every net of a depth-dynamic ConvNeXt, Swin and ViT exports to the stock
MMPretrain class: the files load and infer in a process where mmekd cannot
be imported, and the ONNX export of every net matches PyTorch."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from tool_loader import REPO

from mmengine.config import Config

from mmekd.apis import (build_model, export_onnx, export_subnet,
                        export_to_files, load_config, onnx_logits)
from mmekd.apis.stock_config import mmekd_types
from mmekd.models.plain_net import build_plain

DIGITS = osp.join(REPO, 'configs', '_base_', 'datasets', 'digits_bs64.py')
RUNTIME = osp.join(REPO, 'configs', '_base_', 'default_runtime.py')
SCHEDULE = """
optim_wrapper = dict(type='mmekd.SafeOptimWrapper',
                     optimizer=dict(type='SGD', lr=0.01))
train_cfg = dict(by_epoch=True, max_epochs=1)
val_cfg = dict()
test_cfg = dict()
val_evaluator = dict(type='mmekd.MultiNetAccuracy', topk=(1, ))
test_evaluator = val_evaluator
"""
# Tiny nets on the 16x16 digits: backbone, neck, head width, stock type.
FAMILIES = {
    'convnext': (dict(type='mmekd.DepthDynamicConvNeXt', stem_patch_size=2,
                      arch=dict(depths=[2, 2, 4, 2],
                                channels=[8, 16, 32, 64]),
                      sub_stage_blocks=[[1, 1, 2, 1]], drop_path_rate=0.1),
                 None, 64, 'ConvNeXt'),
    'swin': (dict(type='mmekd.DepthDynamicSwinTransformer', img_size=16,
                  patch_size=2, window_size=2, pad_small_map=True,
                  arch=dict(embed_dims=16, depths=[2, 2, 4, 2],
                            num_heads=[1, 2, 2, 4]),
                  sub_stage_blocks=[[2, 2, 2, 2]]),
             dict(type='GlobalAveragePooling'), 128, 'SwinTransformer'),
    'vit': (dict(type='mmekd.DepthDynamicVisionTransformer', img_size=16,
                 patch_size=4, arch=dict(embed_dims=32, num_layers=6,
                                         num_heads=2,
                                         feedforward_channels=64),
                 sub_stage_blocks=[[2], [4]]),
            None, 32, 'VisionTransformer'),
}

STOCK = r"""
import json, sys
sys.modules['mmekd'] = None  # from here on, `import mmekd` raises
import torch
import mmpretrain
from mmengine.config import Config
from mmengine.runner import Runner
cfg_path, ckpt_path, x_path, out = sys.argv[1:]
model = mmpretrain.get_model(cfg_path, pretrained=ckpt_path)
torch.save(model(torch.load(x_path, weights_only=True)), out)
# MMPretrain's test loop on the exported data, then one fine-tune step
cfg = Config.fromfile(cfg_path)
cfg.work_dir, cfg.load_from = out + '_test', ckpt_path
test = Runner.from_cfg(cfg).test()
cfg = Config.fromfile(cfg_path)
cfg.work_dir, cfg.load_from = out + '_train', ckpt_path
cfg.train_dataloader.batch_size = 4
cfg.train_dataloader.dataset.indices = 4
cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=100)
cfg.param_scheduler = []
runner = Runner.from_cfg(cfg)
runner.train()
start = torch.load(ckpt_path, weights_only=True)['state_dict']
changed = [k for k, v in runner.model.state_dict().items()
           if k in start and not torch.equal(start[k], v)]
json.dump(dict(
    test=test, iters=runner.iter, changed=len(changed),
    mmekd=sorted(m for m, v in sys.modules.items()
                 if m.split('.')[0] == 'mmekd' and v is not None)),
    open(out + '.json', 'w'))
"""


def _config(tmp_path, family) -> str:
    backbone, neck, width, _ = FAMILIES[family]
    path = osp.join(tmp_path, f'{family}.py')
    with open(path, 'w') as f:
        f.write(f'_base_ = [{DIGITS!r}, {RUNTIME!r}]\n' + SCHEDULE +
                'model = ' + repr(dict(
                    type='mmekd.DDNNClassifier', backbone=backbone,
                    neck=neck, head=dict(type='mmekd.MultiNetClsHead',
                                         num_classes=10,
                                         in_channels=width))) + '\n')
    return path


def _randomized_checkpoint(cfg_path, tmp_path):
    torch.manual_seed(0)
    model = build_model(cfg_path)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ckpt = osp.join(tmp_path, 'ddnn.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    return model, ckpt


@pytest.mark.slow
@pytest.mark.parametrize('family', FAMILIES)
def test_export_runs_in_stock_mmpretrain(family, tmp_path):
    cfg_path = _config(tmp_path, family)
    model, ckpt = _randomized_checkpoint(cfg_path, tmp_path)
    exp_cfg, exp_ckpt = export_to_files(cfg_path, ckpt, 'sub0',
                                        osp.join(tmp_path, 'out'))
    exported = Config.fromfile(exp_cfg)
    assert exported.model.backbone.type == FAMILIES[family][3]
    assert mmekd_types(exported.to_dict()) == []
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.save(x, osp.join(tmp_path, 'x.pth'))
    script = osp.join(tmp_path, 'stock.py')
    with open(script, 'w') as f:
        f.write(STOCK)
    out = osp.join(tmp_path, 'logits.pth')
    proc = subprocess.run(
        [sys.executable, script, exp_cfg, exp_ckpt,
         osp.join(tmp_path, 'x.pth'), out],
        capture_output=True, text=True, cwd=str(tmp_path),
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.load(open(out + '.json'))
    assert result['mmekd'] == []  # mmekd was never imported
    assert 0 <= result['test']['accuracy/top1'] <= 100
    assert result['iters'] == 1 and result['changed'] > 0
    model.eval()
    with torch.no_grad():
        expected = model.forward_nets(x, ['sub0'])[0]['sub0']
    torch.testing.assert_close(torch.load(out), expected, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('family', FAMILIES)
def test_onnx_of_every_net_matches_pytorch(family, tmp_path):
    cfg_path = _config(tmp_path, family)
    model, _ = _randomized_checkpoint(cfg_path, tmp_path)
    model.eval()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for net in model.net_names:
        cfg, state_dict = export_subnet(model, net, load_config(cfg_path))
        plain = build_plain(cfg)
        plain.load_state_dict(state_dict)
        plain.eval()
        out = osp.join(tmp_path, f'{net}.onnx')
        if family == 'swin':
            # the exporter bakes Swin's traced batch in: a fixed batch, and
            # a dynamic one refused
            with pytest.raises(ValueError, match='does not hold a dynamic '
                               'batch.*--batch-size N'):
                export_onnx(plain, out, (3, 16, 16))
            export_onnx(plain, out, (3, 16, 16), batch_size=len(x))
        else:
            export_onnx(plain, out, (3, 16, 16))
        with torch.no_grad():
            expected = model.forward_nets(x, [net])[0][net].numpy()
        np.testing.assert_allclose(onnx_logits(out, x), expected, rtol=0,
                                   atol=1e-4)


@pytest.mark.slow
def test_onnx_tool_takes_a_fixed_batch_for_swin(tmp_path):
    """tools/deploy/export_onnx.py: Swin's dynamic batch is refused in one
    line naming ``--batch-size``; with it, the graph is written and checked
    against PyTorch."""
    cfg_path = _config(tmp_path, 'swin')
    _, ckpt = _randomized_checkpoint(cfg_path, tmp_path)
    tool = osp.join(REPO, 'tools', 'deploy', 'export_onnx.py')
    out = osp.join(tmp_path, 'sub0.onnx')
    env = dict(os.environ, OMP_NUM_THREADS='1')

    def run(*extra):
        return subprocess.run(
            [sys.executable, tool, cfg_path, ckpt, out, '--net', 'sub0',
             *extra], capture_output=True, text=True, env=env)

    refused = run()
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith('export_onnx: error: ') and \
        '--batch-size N' in last, refused.stderr[-2000:]
    assert not osp.exists(out)
    done = run('--batch-size', '4')
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'onnxruntime vs PyTorch max |diff|' in done.stdout
    assert osp.isfile(out)

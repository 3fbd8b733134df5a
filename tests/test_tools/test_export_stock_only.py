# Copyright (c) mmekd contributors. All rights reserved.
"""An exported net tests, infers and fine-tunes with stock MMPretrain in a
process where ``import mmekd`` fails."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from tool_loader import REPO, load_tool, tool_path
from torch.testing import assert_close

from mmekd.apis import ExportError, build_model, export_to_files, \
    exported_config, plain_model_cfg
from mmekd.apis.stock_config import mmekd_types

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', 'test_apis'))
from tiny_ddnn import randomize  # noqa: E402

DEMO = osp.join(REPO, 'configs', 'ddnn_demo_digits.py')

# The demo with mmekd's whole training machinery in the config itself.
SAFE_DEMO = """
_base_ = [{demo!r}]
optim_wrapper = dict(type='mmekd.SafeOptimWrapper', on_nonfinite='stop')
default_hooks = dict(checkpoint=dict(type='mmekd.AtomicCheckpointHook'),
                     sampler_seed=None)
custom_hooks = [dict(type='mmekd.CheckpointKeysHook')]
"""

CIFAR_OVERRIDE = """
_base_ = [{base!r}]
_data = dict(data_root={root!r}, val_per_class=1)
train_dataloader = dict(dataset=_data)
val_dataloader = dict(dataset=_data)
test_dataloader = dict(dataset=_data)
"""

STOCK = r"""
import json, sys
sys.modules['mmekd'] = None  # from here on, `import mmekd` raises
import torch
import mmpretrain
from mmengine.config import Config
from mmengine.runner import Runner

cfg_path, ckpt_path, x_path, work_dir, out = sys.argv[1:]
try:
    import mmekd  # noqa: F401
    raise SystemExit('mmekd is importable')
except ImportError:
    pass
result = {}
# 1. build + load + infer
model = mmpretrain.get_model(cfg_path, pretrained=ckpt_path)
x = torch.load(x_path, weights_only=True)
torch.save(model(x), out + '.logits.pth')
# 2. MMPretrain's test loop on the config's own test data
cfg = Config.fromfile(cfg_path)
cfg.work_dir = work_dir + '/test'
cfg.load_from = ckpt_path
runner = Runner.from_cfg(cfg)
result['test'] = runner.test()
batch = next(iter(runner.test_dataloader))
runner.model.eval()
scores = torch.stack([s.pred_score for s in runner.model.test_step(batch)])
torch.save(scores, out + '.scores.pth')
# 3. one fine-tune iteration from the exported weights
cfg = Config.fromfile(cfg_path)
cfg.work_dir = work_dir + '/train'
cfg.load_from = ckpt_path
cfg.train_dataloader.batch_size = 4
cfg.train_dataloader.dataset.indices = 4
cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=100)
cfg.param_scheduler = []
runner = Runner.from_cfg(cfg)
runner.train()
start = torch.load(ckpt_path, weights_only=True)['state_dict']
now = runner.model.state_dict()
result['iters'] = runner.iter
result['changed'] = sorted(k for k in start if k.endswith('weight') and
                           not torch.equal(start[k], now[k]))
result['loss'] = float(runner.message_hub.get_scalar('train/loss').current())
result['mmekd'] = [m for m, v in sys.modules.items()
                   if m.split('.')[0] == 'mmekd' and v is not None]
json.dump(result, open(out, 'w'))
"""


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """The demo's sub0, exported through tools/export_subnet.py from a
    randomized checkpoint of a config with mmekd's training machinery."""
    tmp = tmp_path_factory.mktemp('stock')
    cfg_path = osp.join(tmp, 'safe_demo.py')
    with open(cfg_path, 'w') as f:
        f.write(SAFE_DEMO.format(demo=DEMO))
    model = randomize(build_model(cfg_path))
    ckpt = osp.join(tmp, 'ddnn.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = osp.join(tmp, 'out')
    argv = sys.argv
    sys.argv = [tool_path('export_subnet'), cfg_path, ckpt, out, '--net',
                'sub0']
    try:
        load_tool('export_subnet').main()
    finally:
        sys.argv = argv
    stem = osp.join(out, 'safe_demo_sub0-resnet18')
    return tmp, cfg_path, model, stem + '.py', stem + '.pth'


def test_exported_config_is_stock(exported):
    _, src_cfg, _, exp_cfg, _ = exported
    text = open(exp_cfg).read()
    cfg = Config.fromfile(exp_cfg)
    assert mmekd_types(cfg.to_dict()) == []
    assert 'custom_imports' not in cfg
    assert cfg.default_hooks.checkpoint.type == 'CheckpointHook'
    assert 'exact_resume' not in cfg.default_hooks
    assert cfg.default_hooks.sampler_seed is None  # still disabled
    assert cfg.custom_hooks == []
    assert cfg.optim_wrapper == dict(
        type='OptimWrapper', optimizer=Config.fromfile(
            src_cfg).optim_wrapper.optimizer)
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.test_dataloader.dataset.type == 'CustomDataset'
    assert cfg.test_dataloader.dataset.pipeline[0] == dict(
        type='LoadImageFromFile')
    assert cfg.test_dataloader.dataset.pipeline[1:] == Config.fromfile(
        src_cfg).test_dataloader.dataset.pipeline
    # Every replacement is noted in the file.
    for line in ('# Note: optim_wrapper: mmekd.SafeOptimWrapper -> '
                 "OptimWrapper (dropped check='device', on_nonfinite='stop')",
                 '# Note: default_hooks.checkpoint: '
                 'mmekd.AtomicCheckpointHook -> CheckpointHook',
                 '# Note: default_hooks.exact_resume: dropped '
                 'mmekd.ExactResumeHook',
                 '# Note: model_wrapper_cfg: '
                 'mmekd.DDNNDistributedDataParallel -> '
                 'MMDistributedDataParallel'):
        assert line in text, line


def test_exported_net_runs_without_mmekd(exported):
    tmp, src_cfg, model, exp_cfg, exp_ckpt = exported
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.save(x, osp.join(tmp, 'x.pth'))
    script = osp.join(tmp, 'stock.py')
    with open(script, 'w') as f:
        f.write(STOCK)
    out = osp.join(tmp, 'result.json')
    proc = subprocess.run(
        [sys.executable, script, exp_cfg, exp_ckpt,
         osp.join(tmp, 'x.pth'), osp.join(tmp, 'work'), out],
        capture_output=True, text=True, cwd=tmp,
        env=dict(__import__('os').environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.load(open(out))
    assert result['mmekd'] == []

    # Inference: the DDNN's sub0 logits.
    expected, _ = model.forward_nets(x, ['sub0'])
    assert_close(torch.load(out + '.logits.pth'), expected['sub0'],
                 rtol=0, atol=1e-5)

    # Test loop: the images written as PNG give the DDNN's sub0 its own
    # predictions on the mmekd dataset, batch and accuracy alike.
    cfg = Config.fromfile(src_cfg)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        loader = Runner.build_dataloader(cfg.test_dataloader)
    model.eval()
    model.predict_net, model.eval_all_nets = 'sub0', False
    correct = total = 0
    for i, batch in enumerate(loader):
        samples = model.test_step(batch)
        if i == 0:
            assert_close(
                torch.load(out + '.scores.pth'),
                torch.stack([s.pred_score for s in samples]), rtol=0,
                atol=1e-5)
        for s in samples:
            correct += int(s.pred_label == s.gt_label)
            total += 1
    assert total == 355
    assert result['test']['accuracy/top1'] == pytest.approx(
        100 * correct / total, abs=1e-6)

    # Fine-tune: one iteration, finite loss, weights moved.
    assert result['iters'] == 1
    assert result['loss'] == result['loss'] and result['loss'] > 0
    assert 'head.fc.weight' in result['changed']
    assert 'backbone.conv1.weight' in result['changed']


def test_dataset_without_counterpart_needs_a_folder():
    cfg = Config.fromfile(DEMO)
    model = build_model(cfg)
    with pytest.raises(ExportError,
                       match=r"train_dataloader.dataset.type='mmekd.Digits'"
                       r'.*--data-dir'):
        exported_config(cfg, plain_model_cfg(model, 'sub0', cfg))


def test_cifar_becomes_stock_cifar(tmp_path):
    cfg = Config.fromfile(osp.join(REPO, 'configs',
                                   'ddnn_r34_cifar100_fastdata.py'))
    model = build_model(cfg)
    exp, text = exported_config(cfg, plain_model_cfg(model, 'sub0', cfg))
    assert mmekd_types(exp.to_dict()) == []
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = exp[key].dataset
        assert ds.type == 'CIFAR100'
        assert ds.data_root == cfg.data_root
        assert 'val_per_class' not in ds and 'subset' not in ds
    assert exp.train_dataloader.dataset.split == 'train'
    assert exp.val_dataloader.dataset.split == 'test'
    assert 'collate_fn' not in exp.train_dataloader
    assert exp.model.data_preprocessor == dict(
        type='ClsDataPreprocessor', num_classes=100,
        mean=cfg.data_preprocessor.mean, std=cfg.data_preprocessor.std,
        to_rgb=False)
    assert ("# Note: model.data_preprocessor: mmekd.GPUAugmentPreprocessor"
            " -> ClsDataPreprocessor (dropped flip_prob=0.5, padding=4)"
            in text)
    assert ('# Note: val_dataloader.dataset: the held-out part of the '
            "training split became the official test split (split='test')"
            in text)
    # mmekd's optimizer wrapper constructor: MMEngine's default instead.
    assert 'constructor' not in exp.optim_wrapper
    assert ("# Note: optim_wrapper: dropped constructor="
            "'mmekd.FusedOptimWrapperConstructor'" in text)


def test_data_dir_writes_every_dataset(tmp_path):
    from test_datasets.test_cifar import write_fake_cifar100
    import pickle
    root = osp.join(tmp_path, 'cifar')
    write_fake_cifar100(root, per_class=2, num_classes=100, test=False)
    # Colour images: the blue plane (the last of CIFAR's R, G, B planes)
    # differs from the red one.
    train_file = osp.join(root, 'cifar-100-python', 'train')
    with open(train_file, 'rb') as f:
        train = pickle.load(f)
    train['data'][:, 2048:] = 255 - train['data'][:, 2048:]
    with open(train_file, 'wb') as f:
        pickle.dump(train, f)
    src_cfg = osp.join(tmp_path, 'cifar.py')
    with open(src_cfg, 'w') as f:
        f.write(CIFAR_OVERRIDE.format(
            base=osp.join(REPO, 'configs', 'ddnn_r34_cifar100.py'),
            root=root))
    src = Config.fromfile(src_cfg)
    cfg_path, _ = export_to_files(
        src_cfg, None, 'sub0', osp.join(tmp_path, 'out'),
        data_dir=osp.join(tmp_path, 'images'))
    exp = Config.fromfile(cfg_path)
    assert exp.train_dataloader.dataset.type == 'CustomDataset'
    assert exp.val_dataloader.dataset == exp.test_dataloader.dataset
    lines = open(osp.join(tmp_path, 'images', 'val.txt')).read().split('\n')
    assert len([line for line in lines if line]) == 100  # 1 per class
    # The written images have their true colours: an RGB viewer (PIL) shows
    # the RGB arrays mmekd's CIFAR gave; the stock pipeline reads them as
    # BGR, as any image file.
    import numpy as np
    from mmpretrain.registry import DATASETS
    from PIL import Image
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        ours = DATASETS.build(dict(src.val_dataloader.dataset.to_dict(),
                                   pipeline=[]))
        stock = DATASETS.build(dict(exp.val_dataloader.dataset.to_dict(),
                                    pipeline=[dict(type='LoadImageFromFile')]))
    assert stock.metainfo['classes'] == list(ours.metainfo['classes'])
    for i in (0, 57, 99):
        a, b = ours.get_data_info(i), stock[i]
        assert a['img'][..., 0].tolist() != a['img'][..., 2].tolist()
        viewer = np.asarray(Image.open(b['img_path']).convert('RGB'))
        assert (viewer == a['img']).all()
        assert (b['img'] == a['img'][..., ::-1]).all()
        assert a['gt_label'] == b['gt_label']

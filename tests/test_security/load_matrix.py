# Copyright (c) mmekd contributors. All rights reserved.
"""Every way a user loads a checkpoint x every hostile checkpoint.

Run as ``python load_matrix.py WORK_DIR`` (by ``test_load_matrix.py``, in
a subprocess, so that a crash of the interpreter fails the test instead of
killing the test run). Writes ``WORK_DIR/results.json``: one record per
(path, payload) with the outcome and the message, appended as each attempt
ends (a crash leaves the attempts before it, and ``running.json`` names the
one that crashed).
"""
import json
import os
import os.path as osp
import sys
import traceback

HERE = osp.dirname(osp.abspath(__file__))
sys.path[:0] = [HERE, osp.dirname(HERE), osp.join(HERE, '..', 'test_apis')]

import torch  # noqa: E402

torch.set_num_threads(1)

import mmekd  # noqa: E402,F401
from payloads import (RunsShell, history_buffer_payloads,  # noqa: E402
                      numpy_payloads, write)
from tiny_ddnn import write_config  # noqa: E402
from tool_loader import load_tool  # noqa: E402

TRAIN_EXTRA = """
train_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(type='mmekd.Digits', split='train', indices=4, pipeline=[
        dict(type='Resize', scale=(16, 16)), dict(type='PackInputs')]),
    sampler=dict(type='DefaultSampler', shuffle=False))
train_cfg = dict(by_epoch=True, max_epochs=1)
optim_wrapper = dict(type='mmekd.SafeOptimWrapper',
                     optimizer=dict(type='SGD', lr=0.01))
param_scheduler = []
default_hooks = dict(
    checkpoint=dict(type='mmekd.AtomicCheckpointHook', interval=1),
    logger=dict(type='LoggerHook', interval=100))
"""

KE_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmekd'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet_CIFAR', depth=18, base_channels=4,
                  stem_channels=4),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=5, in_channels=32,
              loss=dict(type='CrossEntropyLoss')))
data_preprocessor = dict(num_classes=5, mean=[0.0] * 3, std=[255.0] * 3)
""" + TRAIN_EXTRA + """
custom_hooks = [dict(type='mmekd.KnowledgeEvolutionHook', split_rate=0.5,
                     num_generations=2, epochs_per_generation=1)]
train_cfg = dict(by_epoch=True, max_epochs=2)
"""


def _payload_files(base: str, prefix: str, marker: str) -> dict:
    """``{payload: file}``: the training checkpoint ``base`` turned into
    each hostile file (the pickle-level ones carry a shell command or a
    crash; ``code_in_meta_cfg`` is ``base`` with code in its config
    text)."""
    from mmekd.utils import safe_load
    good = safe_load(base)
    files = {}
    for kind in ('pickle', 'zip', 'legacy'):
        files[f'shell_{kind}'] = f'{prefix}shell_{kind}.pth'
        write(files[f'shell_{kind}'], kind, RunsShell(marker))

    def variant(name, edit):
        ckpt = safe_load(base)
        edit(ckpt)
        files[name] = f'{prefix}{name}.pth'
        torch.save(ckpt, files[name])

    variant('code_in_meta_cfg', lambda c: c['meta'].update(
        cfg=f"__import__('os').system('touch {marker}')\n" + c['meta'][
            'cfg']))
    variant('numpy_crash', lambda c: c['message_hub']['runtime_info'].update(
        x=numpy_payloads()['object_scalar_cleared_flags']))
    variant('history_buffer_override', lambda c: c['message_hub'][
        'log_scalars'].update(
            loss=history_buffer_payloads()['buffer_method_override']))
    assert good['meta']['epoch'] == 1
    return files


def make_files(work_dir):
    """The configs, a real training checkpoint of each (a DDNN, and a plain
    ResNet under Knowledge Evolution) and the hostile files made from
    them."""
    cfg = write_config(osp.join(work_dir, 'tiny.py'))
    with open(cfg) as f:
        text = f.read()
    train_cfg = osp.join(work_dir, 'tiny_train.py')
    with open(train_cfg, 'w') as f:
        f.write(text + TRAIN_EXTRA)
    ke_cfg = osp.join(work_dir, 'ke_train.py')
    with open(ke_cfg, 'w') as f:
        f.write(KE_CONFIG)
    marker = osp.join(work_dir, 'pwned')
    files = {}
    for name, config in (('ddnn', train_cfg), ('ke', ke_cfg)):
        run_dir = osp.join(work_dir, f'train_{name}')
        run_tool('train', [config, '--work-dir', run_dir, '--cfg-options',
                           'train_cfg.max_epochs=1'] if name == 'ddnn' else
                 [config, '--work-dir', run_dir])
        files[name] = _payload_files(
            osp.join(run_dir, 'epoch_1.pth'),
            osp.join(work_dir, f'{name}_'), marker)
    return dict(cfg=train_cfg, train_cfg=train_cfg, ke_cfg=ke_cfg,
                marker=marker, files=files)


def run_tool(name, argv):
    tool = load_tool(name)
    sys.argv = [tool.__file__, *argv]
    tool.main()


def paths(env, work_dir):
    """``{path name: (function(checkpoint, attempt dir), model)}``, model
    ``'ddnn'`` or ``'ke'``: whose checkpoints the path loads."""
    cfg, train_cfg, ke_cfg = env['cfg'], env['train_cfg'], env['ke_cfg']
    small = ['--cfg-options', 'test_dataloader.dataset.indices=4']

    def resume_last(ckpt, d, config=train_cfg):
        with open(osp.join(d, 'last_checkpoint'), 'w') as f:
            f.write(ckpt)
        run_tool('train', [config, '--work-dir', d, '--resume'])

    def get_model(ckpt, d):
        import mmpretrain
        mmpretrain.get_model(cfg, pretrained=ckpt)

    def mmengine_load(ckpt, d):
        from mmengine.runner import load_checkpoint

        from mmekd.apis import build_model
        load_checkpoint(build_model(cfg), ckpt, map_location='cpu')

    def load_ddnn(ckpt, d):
        from mmekd.apis import check_net_in_checkpoint, load_ddnn_model
        check_net_in_checkpoint(load_ddnn_model(cfg, ckpt), 'sub0')

    ways = {
        'tools/test.py': lambda c, d: run_tool(
            'test', [cfg, c, '--work-dir', d, *small]),
        'train --resume PATH': lambda c, d: run_tool(
            'train', [train_cfg, '--work-dir', d, '--resume', c]),
        'train --resume (last_checkpoint)': resume_last,
        'load_from': lambda c, d: run_tool(
            'train', [train_cfg, '--work-dir', d, '--cfg-options',
                      f'load_from={c}']),
        'init_cfg=Pretrained': lambda c, d: run_tool(
            'train', [train_cfg, '--work-dir', d, '--cfg-options',
                      'model.init_cfg.type=Pretrained',
                      f'model.init_cfg.checkpoint={c}']),
        'export_subnet': lambda c, d: run_tool(
            'export_subnet', [cfg, c, d, '--net', 'sub0']),
        'export_onnx': lambda c, d: run_tool(
            'deploy/export_onnx', [cfg, c, osp.join(d, 'm.onnx'), '--net',
                                   'sub0']),
        'extract_slim': lambda c, d: run_tool(
            'extract_slim', [ke_cfg, c, d]),
        'subnet_costs': lambda c, d: run_tool(
            'analysis/subnet_costs', [cfg, c, '--out-dir', d]),
        'eval_recalibrated': lambda c, d: run_tool(
            'analysis/eval_recalibrated', [cfg, c, '--num-batches', '1']),
        'mmpretrain.get_model(pretrained=PATH)': get_model,
        'mmengine load_checkpoint': mmengine_load,
        'mmekd.apis.load_ddnn_model': load_ddnn,
        'KE generation checkpoint (--resume)': lambda c, d: resume_last(
            c, d, ke_cfg),
    }
    ke = ('extract_slim', 'KE generation checkpoint (--resume)')
    return {k: (fn, 'ke' if k in ke else 'ddnn') for k, fn in ways.items()}


def main(work_dir):
    env = make_files(work_dir)
    out = osp.join(work_dir, 'results.json')
    records = []
    for path, (fn, model) in paths(env, work_dir).items():
        for payload, ckpt in env['files'][model].items():
            d = osp.join(work_dir, 'runs', f'{len(records)}')
            os.makedirs(d)
            with open(osp.join(work_dir, 'running.json'), 'w') as f:
                json.dump(dict(path=path, payload=payload), f)
            outcome, message = 'loaded', ''
            try:
                fn(ckpt, d)
            except BaseException as e:  # noqa: B902 (SystemExit included)
                outcome = 'refused'
                message = f'{type(e).__name__}: {e}'
                if not isinstance(e, SystemExit):
                    message += '\n' + ''.join(
                        traceback.format_exception(e)[-3:])
            pwned = osp.exists(env['marker'])
            if pwned:
                os.remove(env['marker'])
            records.append(dict(path=path, payload=payload, file=ckpt,
                                outcome=outcome, message=message,
                                code_ran=pwned))
            with open(out, 'w') as f:
                json.dump(records, f, indent=1)
    os.remove(osp.join(work_dir, 'running.json'))


if __name__ == '__main__':
    main(sys.argv[1])

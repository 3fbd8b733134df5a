# Copyright (c) mmekd contributors. All rights reserved.
"""Every way a user loads a checkpoint or a CIFAR file x every hostile file.

Run as ``python load_matrix.py WORK_DIR PART`` (by ``test_load_matrix.py``,
in a subprocess, so that a crash of the interpreter fails the test instead
of killing the test run), ``PART`` ``checkpoints`` or ``datasets``. Writes
``WORK_DIR/results.json``: one record per (path, payload) with the outcome
and the message, appended as each attempt ends; ``running.json`` names the
attempt under way, so that after a crash the caller can record it and run
this again, which goes on after the attempts already recorded (the files
are made once, ``env.json``). An attempt still running after
``ATTEMPT_SECONDS`` is stopped and recorded as ``hung``.
"""
import json
import os
import os.path as osp
import pickle
import shutil
import signal
import sys
import time
import traceback

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
sys.path[:0] = [HERE, osp.dirname(HERE), osp.join(HERE, '..', 'test_apis')]

import torch  # noqa: E402

torch.set_num_threads(1)

import mmekd  # noqa: E402,F401
from payloads import (CIFAR_PAYLOADS, CONTAINER_PAYLOADS,  # noqa: E402
                      RunsShell, cifar_batch, history_buffer_payloads,
                      numpy_payloads, python2_pickle, write,
                      write_cifar_payload, write_container_payload)
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
    for payload in CONTAINER_PAYLOADS:
        files[payload] = f'{prefix}{payload}.pth'
        write_container_payload(files[payload], payload, base)
    assert good['meta']['epoch'] == 1
    return files


def make_checkpoint_files(work_dir):
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


def checkpoint_paths(env):
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


def checkpoint_cases(env):
    """``[(path, payload, file, function(attempt dir))]``."""
    return [(path, payload, ckpt, lambda d, fn=fn, c=ckpt: fn(c, d))
            for path, (fn, model) in checkpoint_paths(env).items()
            for payload, ckpt in env['files'][model].items()]


# The CIFAR files each dataset path reads, as {key: (layout, file name)}.
CIFAR_FILES = {
    'cifar100': ('cifar-100-python', ('train', 'test', 'meta')),
    'cifar10': ('cifar-10-batches-py', tuple(
        f'data_batch_{i}' for i in range(1, 6)) + ('test_batch',
                                                   'batches.meta')),
}
# Re-packed copies that must load: Python 3 protocol 2 (bytes as
# _codecs.encode) and Python 2's layout (dtype ('u1', 0, 1), byte strings).
GOOD_CIFAR = ('repacked_protocol_2', 'python2_layout')


def _cifar_file(key: str, name: str) -> dict:
    """What the CIFAR file ``name`` of layout ``key`` holds (2 images)."""
    if 'meta' in name:
        return {('fine_label_names' if key == 'cifar100' else 'label_names'):
                ['a', 'b']}
    return cifar_batch(2, 'fine_labels' if key == 'cifar100' else 'labels')


def make_dataset_files(work_dir):
    """A CIFAR-10 and a CIFAR-100 folder per (file, payload): the files as
    Python 2 wrote them, but that one which is the payload."""
    marker = osp.join(work_dir, 'pwned')
    roots = {}
    for key, (folder, names) in CIFAR_FILES.items():
        clean = osp.join(work_dir, 'clean', key)
        os.makedirs(osp.join(clean, folder))
        for name in names:
            with open(osp.join(clean, folder, name), 'wb') as f:
                f.write(python2_pickle(_cifar_file(key, name)))
        for name in names:
            for payload in CIFAR_PAYLOADS + GOOD_CIFAR:
                root = osp.join(work_dir, 'data', key, name, payload)
                shutil.copytree(clean, root)
                path = osp.join(root, folder, name)
                os.remove(path)
                if payload in GOOD_CIFAR:
                    batch = _cifar_file(key, name)
                    with open(path, 'wb') as f:
                        f.write(python2_pickle(batch) if payload ==
                                'python2_layout' else pickle.dumps(
                                    batch, protocol=2))
                else:
                    write_cifar_payload(path, payload, marker)
                roots[f'{key}/{name}/{payload}'] = root
    return dict(marker=marker, roots=roots)


def dataset_paths():
    """``{path name: (function(data root, attempt dir), CIFAR key, file)}``:
    the file of the CIFAR folder that the path reads and that is hostile."""
    from mmekd.datasets import load_cifar_batch
    from mmekd.registry import DATASETS

    def build(kind, split):
        return lambda root, d: DATASETS.build(
            dict(type=f'mmekd.{kind}', data_root=root, split=split))

    def train_tool(root, d):
        run_tool('train', [
            osp.join(REPO, 'configs', 'ddnn_r34_cifar100.py'), '--work-dir',
            d, '--cfg-options', f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0'
        ])

    return {
        'CIFAR100 train': (build('CIFAR100', 'train'), 'cifar100', 'train'),
        'CIFAR100 test': (build('CIFAR100', 'test'), 'cifar100', 'test'),
        'CIFAR10 train': (build('CIFAR10', 'train'), 'cifar10',
                          'data_batch_1'),
        'CIFAR10 test': (build('CIFAR10', 'test'), 'cifar10', 'test_batch'),
        'load_cifar_batch(meta)': (lambda root, d: load_cifar_batch(
            osp.join(root, 'cifar-100-python', 'meta')), 'cifar100', 'meta'),
        'load_cifar_batch(batches.meta)': (lambda root, d: load_cifar_batch(
            osp.join(root, 'cifar-10-batches-py', 'batches.meta')),
            'cifar10', 'batches.meta'),
        'tools/train.py ddnn_r34_cifar100': (train_tool, 'cifar100', 'train'),
    }


def dataset_cases(env):
    cases = []
    for path, (fn, key, name) in dataset_paths().items():
        payloads = CIFAR_PAYLOADS + (GOOD_CIFAR if 'tools' not in path else
                                     ())  # a good file would start training
        for payload in payloads:
            root = env['roots'][f'{key}/{name}/{payload}']
            hostile = osp.join(root, CIFAR_FILES[key][0], name)
            cases.append((path, payload, hostile,
                          lambda d, fn=fn, root=root: fn(root, d)))
    return cases


PARTS = {'checkpoints': (make_checkpoint_files, checkpoint_cases),
         'datasets': (make_dataset_files, dataset_cases)}
ATTEMPT_SECONDS = 120


class AttemptTimeout(BaseException):
    """An attempt ran past ``ATTEMPT_SECONDS`` (a loader blocked)."""


def _timeout(signum, frame):
    raise AttemptTimeout(f'no result after {ATTEMPT_SECONDS} s')


def main(work_dir, part):
    make, cases = PARTS[part]
    env_file = osp.join(work_dir, 'env.json')
    if not osp.exists(env_file):
        with open(env_file, 'w') as f:
            json.dump(make(work_dir), f)
    with open(env_file) as f:
        env = json.load(f)
    out = osp.join(work_dir, 'results.json')
    records = json.load(open(out)) if osp.exists(out) else []
    done = {(r['path'], r['payload']) for r in records}
    signal.signal(signal.SIGALRM, _timeout)
    for path, payload, hostile, fn in cases(env):
        if (path, payload) in done:
            continue
        d = osp.join(work_dir, 'runs', f'{len(records)}')
        os.makedirs(d, exist_ok=True)
        with open(osp.join(work_dir, 'running.json'), 'w') as f:
            json.dump(dict(path=path, payload=payload, file=hostile), f)
        outcome, error, trace = 'loaded', '', ''
        start = time.perf_counter()
        signal.alarm(ATTEMPT_SECONDS)
        try:
            fn(d)
        except AttemptTimeout as e:
            outcome, error = 'hung', str(e)
        except BaseException as e:  # noqa: B902 (SystemExit included)
            outcome, error = 'refused', f'{type(e).__name__}: {e}'
            if not isinstance(e, SystemExit):
                trace = ''.join(traceback.format_exception(e)[-3:])
        finally:
            signal.alarm(0)
        pwned = osp.exists(env['marker'])
        if pwned:
            os.remove(env['marker'])
        records.append(dict(
            path=path, payload=payload, file=hostile, outcome=outcome,
            error=error, message=f'{error}\n{trace}' if trace else error,
            code_ran=pwned, seconds=round(time.perf_counter() - start, 2)))
        with open(out, 'w') as f:
            json.dump(records, f, indent=1)
    if osp.exists(osp.join(work_dir, 'running.json')):
        os.remove(osp.join(work_dir, 'running.json'))


if __name__ == '__main__':
    main(*sys.argv[1:3])

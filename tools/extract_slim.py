# Copyright (c) mmekd contributors. All rights reserved.
"""Extract the slim network (KELS fit hypothesis) of a Knowledge Evolution
checkpoint as a plain MMPretrain config + checkpoint that ``tools/test.py``
(and ``tools/export_onnx.py``) run as is. For a DDNN, ``--net`` picks the
net (``full``, ``sub0``...): every net has its own slim network.

Example::

    python tools/extract_slim.py configs/ke/xxx.py work_dirs/xxx/generation_5.pth \\
        work_dirs/xxx/slim [--net sub0] [--onnx work_dirs/xxx/slim.onnx]
    python tools/test.py work_dirs/xxx/slim/slim_config.py \\
        work_dirs/xxx/slim/slim.pth
"""  # noqa: E501
import argparse
import os
import os.path as osp
from typing import Optional, Tuple

# mmekd first: it quiets mmcv-lite's import warning before mmpretrain.
import mmekd  # noqa: F401,I001  (also registers the components)
import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmekd.apis import (export_onnx, export_subnet, exported_checkpoint,
                        exported_config, input_size, verify_onnx)
from mmekd.utils.flops import quiet_flop_counter
from mmekd.engine.hooks.knowledge_evolution_hook import STATE_KEY
from mmekd.models.ke import check_split_rate, extract_slim
from mmekd.vocabulary import is_ddnn
from mmekd.registry import MODELS
from mmekd.utils import (atomic_output, atomic_write, check_finite,
                         check_loadable, check_outputs_not_inputs, safe_load)
from mmekd.utils.cli import add_cfg_options, read_config, tool_main
from mmekd.utils.refusal import RefusalError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Extract the slim network of a KE (KELS) checkpoint')
    parser.add_argument('config', help='training config of the dense model')
    parser.add_argument('checkpoint', help='dense checkpoint')
    parser.add_argument('out_dir', help='writes slim_config.py, slim.pth')
    parser.add_argument(
        '--split-rate', type=float, help='split rate s; default: the one '
        'stored in the checkpoint, else the config\'s KE hook')
    parser.add_argument(
        '--net', help="net of a DDNN checkpoint: 'full', 'sub0', ... "
        '(required for a DDNN, refused for a single-net model)')
    parser.add_argument(
        '--shape', type=int, nargs='+', help='input size for FLOPs, e.g. '
        '224 or 3 224 224; default: the size of the config\'s test pipeline, '
        'else 32 for CIFAR ResNets and 224 otherwise')
    parser.add_argument(
        '--onnx', metavar='FILE', help='also export the slim network to this '
        '.onnx file (input: normalized images at --shape) and check '
        "onnxruntime's logits against PyTorch's")
    add_cfg_options(parser)
    return parser.parse_args(argv)


def find_split_rate(cfg: Config, checkpoint: dict,
                    given: Optional[float]) -> float:
    """The KELS split rate: checkpoint state, else the config's KE hook;
    ``given`` must agree with them."""
    state = checkpoint.get(STATE_KEY)
    if state is not None:
        if state['split']['mode'] != 'kels':
            raise ValueError(
                f"{state['split']['mode']} split: only a KELS split gives a "
                'slim network')
        found, where = state['split']['rate'], 'the checkpoint'
    else:
        hooks = [
            h for h in cfg.get('custom_hooks', [])
            if str(h.get('type', '')).endswith('KnowledgeEvolutionHook')
        ]
        found = hooks[0].get('split_rate', 0.5) if hooks else None
        where = 'the config'
    if given is not None and found is not None and given != found:
        raise ValueError(f'--split-rate {given} differs from s={found} in '
                         f'{where}')
    rate = given if given is not None else found
    if rate is None:
        raise ValueError('No split rate in the checkpoint or config; pass '
                         '--split-rate')
    return check_split_rate(rate)


def complexity(model: torch.nn.Module, shape: Tuple[int]) -> Tuple[int, int]:
    """(MACs, params) of one forward pass (``mmengine.analysis`` counts a
    multiply-add as one FLOP)."""
    with quiet_flop_counter():
        info = get_model_complexity_info(
            model, input_shape=shape, show_table=False, show_arch=False)
    return info['flops'], info['params']


@tool_main
def main(argv=None):
    args = parse_args(argv)
    cfg_path = osp.join(args.out_dir, 'slim_config.py')
    ckpt_path = osp.join(args.out_dir, 'slim.pth')
    check_outputs_not_inputs(
        dict(config=cfg_path, checkpoint=ckpt_path, onnx=args.onnx),
        dict(config=args.config, checkpoint=args.checkpoint))
    cfg = read_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    dense = MODELS.build(model_cfg)
    checkpoint = safe_load(args.checkpoint, map_location='cpu')
    check_finite(checkpoint['state_dict'],
                 f'Checkpoint {args.checkpoint}',
                 advice='It was saved after training diverged: use an '
                 'earlier generation checkpoint.')
    # A checkpoint of another model: the keys it lacks, as one refusal.
    check_loadable(dense, checkpoint['state_dict'],
                     f'checkpoint {args.checkpoint}')
    dense.load_state_dict(checkpoint['state_dict'])
    dense.eval()
    rate = find_split_rate(cfg, checkpoint, args.split_rate)
    if is_ddnn(dense) and args.net is None:
        raise RefusalError('a DDNN checkpoint has one slim network per '
                           f'net: pass --net, one of '
                           f'{dense.backbone.net_names}')
    try:
        slim_cfg, slim = extract_slim(dense, model_cfg, rate, args.net)
    except TypeError as e:  # a model slim extraction does not know
        raise RefusalError(str(e)) from None
    if args.net is not None:  # the dense net alone, for its costs
        plain_cfg, state_dict = export_subnet(dense, args.net, model_cfg)
        dense = MODELS.build(plain_cfg)
        dense.load_state_dict(state_dict)

    os.makedirs(args.out_dir, exist_ok=True)
    what = f'net {args.net!r} of ' if args.net else ''
    header = (f'Slim network (KELS fit hypothesis, s={rate}) of {what}'
              f'{osp.basename(args.checkpoint)}, extracted by\nmmekd '
              f'(tools/extract_slim.py) from {args.config}.\n')
    _, text = exported_config(plain_training(cfg), slim_cfg, header,
                              keep_mmekd_data=True)
    atomic_write(cfg_path, text)
    with atomic_output(ckpt_path) as tmp:
        torch.save(
            exported_checkpoint(
                slim.state_dict(), checkpoint.get('meta', {}),
                dict(slim_split_rate=rate, net=args.net,
                     source_checkpoint=osp.basename(args.checkpoint))),
            tmp)

    if args.shape:
        shape = tuple(args.shape if len(args.shape) == 3 else
                      [3] + args.shape * (3 - len(args.shape)))
    else:
        shape = (3, *input_size(cfg))
    (d_macs, d_params), (s_macs, s_params) = [
        complexity(m, shape) for m in (dense, slim)
    ]
    print(f'split rate s={rate}, input {shape}; FLOPs as counted by '
          'mmengine.analysis (1 multiply-add = 1 FLOP; the KE paper counts '
          'G-Ops = 2 x this)')
    print('| network | params (M) | GFLOPs (MACs) | G-Ops (2 x MACs) |')
    print('|---|---|---|---|')
    for name, macs, params in (('dense', d_macs, d_params),
                               ('slim', s_macs, s_params)):
        print(f'| {name} | {params / 1e6:.3f} | {macs / 1e9:.4f} | '
              f'{2 * macs / 1e9:.4f} |')
    print(f'slim / dense: params {s_params / d_params:.3f}, FLOPs '
          f'{s_macs / d_macs:.3f} ({100 * (1 - s_macs / d_macs):.1f}% fewer)')
    print(f'wrote {cfg_path} and {ckpt_path}; test with:\n  python '
          f'tools/test.py {cfg_path} {ckpt_path}')
    if args.onnx:
        slim.eval()
        with atomic_output(args.onnx) as tmp:
            export_onnx(slim, tmp, shape, metadata=dict(
                net=args.net or 'model', slim_split_rate=rate,
                input_size=f'{shape[1]}x{shape[2]}'))
        x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
        diff = verify_onnx(args.onnx, slim, x)
        print(f'wrote {args.onnx}: onnxruntime vs PyTorch max |diff| = '
              f'{diff:.2e}')


def plain_training(cfg: Config) -> Config:
    """``cfg`` with a plain training setup (one generation's length and
    schedule) in place of Knowledge Evolution's loop, which needs the KE hook
    the slim config no longer has."""
    hooks = [
        h for h in cfg.get('custom_hooks', [])
        if str(h.get('type', '')).endswith('KnowledgeEvolutionHook')
    ]
    train_cfg = dict(cfg.get('train_cfg') or {})
    if not hooks or 'KnowledgeEvolutionTrainLoop' not in str(
            train_cfg.get('type', '')):
        return cfg
    cfg = cfg.copy()
    train_cfg.pop('type')
    train_cfg.update(
        by_epoch=True, max_epochs=hooks[0]['epochs_per_generation'])
    cfg.train_cfg = train_cfg
    if hooks[0].get('generation_schedule') is not None:
        cfg.param_scheduler = hooks[0]['generation_schedule']
    return cfg


if __name__ == '__main__':
    main()

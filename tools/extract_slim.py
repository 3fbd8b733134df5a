# Copyright (c) mmekd contributors. All rights reserved.
"""Extract the slim network (KELS fit hypothesis) of a Knowledge Evolution
checkpoint as a config + checkpoint that ``tools/test.py`` runs as is.

Example::

    python tools/extract_slim.py configs/ke/xxx.py work_dirs/xxx/generation_5.pth \\
        work_dirs/xxx/slim
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
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmpretrain.models import ResNet_CIFAR

from mmekd.apis.costs import quiet_flop_counter
from mmekd.engine.hooks.knowledge_evolution_hook import STATE_KEY
from mmekd.models.utils import check_split_rate, extract_slim
from mmekd.registry import MODELS
from mmekd.utils import safe_load


def parse_args():
    parser = argparse.ArgumentParser(
        description='Extract the slim network of a KE (KELS) checkpoint')
    parser.add_argument('config', help='training config of the dense model')
    parser.add_argument('checkpoint', help='dense checkpoint')
    parser.add_argument('out_dir', help='writes slim_config.py, slim.pth')
    parser.add_argument(
        '--split-rate', type=float, help='split rate s; default: the one '
        'stored in the checkpoint, else the config\'s KE hook')
    parser.add_argument(
        '--shape', type=int, nargs='+', help='input size for FLOPs, e.g. '
        '224 or 3 224 224; default: 32 for CIFAR ResNets, else 224')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


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


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    dense = MODELS.build(model_cfg)
    checkpoint = safe_load(args.checkpoint, map_location='cpu')
    dense.load_state_dict(checkpoint['state_dict'])
    dense.eval()
    rate = find_split_rate(cfg, checkpoint, args.split_rate)
    slim_cfg, slim = extract_slim(dense, model_cfg, rate)

    os.makedirs(args.out_dir, exist_ok=True)
    out_cfg = cfg.copy()
    out_cfg.model = slim_cfg
    out_cfg.custom_hooks = [
        h for h in cfg.get('custom_hooks', [])
        if not str(h.get('type', '')).endswith('KnowledgeEvolutionHook')
    ]
    out_cfg.load_from = None
    out_cfg.resume = False
    cfg_path = osp.join(args.out_dir, 'slim_config.py')
    out_cfg.dump(cfg_path)
    meta = dict(checkpoint.get('meta', {}))
    meta.pop('cfg', None)
    meta['slim'] = dict(
        split_rate=rate, source=osp.abspath(args.checkpoint))
    ckpt_path = osp.join(args.out_dir, 'slim.pth')
    torch.save(dict(meta=meta, state_dict=slim.state_dict()), ckpt_path)

    if args.shape:
        shape = tuple(args.shape if len(args.shape) == 3 else
                      [3] + args.shape * (3 - len(args.shape)))
    else:
        size = 32 if isinstance(dense.backbone, ResNet_CIFAR) else 224
        shape = (3, size, size)
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


if __name__ == '__main__':
    main()

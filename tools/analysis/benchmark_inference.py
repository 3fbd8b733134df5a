# Copyright (c) mmekd contributors. All rights reserved.
"""Inference throughput of every exported net of a DDNN config next to a
plain MMPretrain ResNet of the same structure, measured in one run.

    python tools/analysis/benchmark_inference.py CONFIG [CKPT] --batch-size 16

For each net three models run on the same input, interleaved round by round
(order shuffled each round) and summarised by the median time per batch:

* ``exported``: the net as :func:`mmekd.apis.export_subnet` exports it
  (MMPretrain ``ResNet``/``ResNet_CIFAR`` or, for non-standard depths,
  ``mmekd.DepthDynamicResNet`` in single-net mode);
* ``plain``: MMPretrain's own ``ResNet`` code with the same blocks per stage
  (for non-standard depths an ``arch_settings`` override, as in the tests);
* ``in DDNN``: the net run inside the full DDNN model
  (``forward_nets(x, [net])``), for reference.

``ratio = exported / plain`` throughput; 1.00 means no overhead.
"""
import argparse
import random
import statistics
import time

# mmekd first: it quiets mmcv-lite's import warning before mmpretrain.
import mmekd  # noqa: F401,I001  (also registers the components)
import mmengine
import torch
from mmengine.config import Config
from mmpretrain.models import ResNet, ResNet_CIFAR

from mmekd.apis import (build_model, export_subnet, input_size,
                        load_ddnn_model, net_arch_name)
from mmekd.utils import (atomic_output,
                         check_outputs_not_inputs)
from mmekd.utils.cli import add_cfg_options, read_config, tool_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Throughput of exported nets vs plain MMPretrain ResNets')
    parser.add_argument('config', help='DDNN config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (optional)')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--shape', type=int, nargs='+', help='input H [W]')
    parser.add_argument(
        '--rounds', type=int, default=15, help='timed rounds per model')
    parser.add_argument(
        '--iters', type=int, default=3, help='batches per timed round')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='cpu or cuda (default: cuda if available)')
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--nets', nargs='+', help='nets (default: all)')
    parser.add_argument('--out', help='write the results as JSON')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def plain_reference(exported: torch.nn.Module, plain_cfg: dict,
                    blocks) -> torch.nn.Module:
    """``exported`` with its backbone rebuilt from MMPretrain's own ResNet
    class (same blocks per stage) and the same weights."""
    bb_cfg = dict(plain_cfg['backbone'])
    bb_type = bb_cfg.pop('type')
    base = ResNet_CIFAR if 'CIFAR' in bb_type else ResNet
    bb_cfg.pop('stage_blocks', None)
    depth = bb_cfg.pop('depth')
    block = base.arch_settings[depth][0]
    cls = type('PlainResNet', (base, ),
               dict(arch_settings={depth: (block, tuple(blocks))}))
    backbone = cls(depth, **bb_cfg)
    reference = build_model(
        Config(dict(model=dict(plain_cfg, backbone=backbone))))
    reference.load_state_dict(exported.state_dict(), strict=True)
    assert type(reference.backbone).forward in (ResNet.forward,
                                                ResNet_CIFAR.forward)
    return reference


@tool_main
def main(argv=None):
    args = parse_args(argv)
    check_outputs_not_inputs(
        dict(out=args.out),
        dict(config=args.config, checkpoint=args.checkpoint))
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = read_config(args.config, args.cfg_options)
    ddnn = load_ddnn_model(cfg, args.checkpoint)
    h, w = (args.shape[0], args.shape[-1]) if args.shape else input_size(cfg)
    device = torch.device(args.device)
    x = torch.randn(args.batch_size, 3, h, w, device=device)
    ddnn.to(device).eval()
    nets = args.nets or ddnn.net_names

    runners = {}
    for net in nets:
        plain_cfg, state_dict = export_subnet(ddnn, net, cfg)
        exported = build_model(Config(dict(model=plain_cfg)))
        exported.load_state_dict(state_dict, strict=True)
        reference = plain_reference(exported, plain_cfg,
                                    ddnn.backbone.blocks_per_stage(net))
        exported.to(device).eval()
        reference.to(device).eval()
        runners[(net, 'exported')] = lambda m=exported: m(x, mode='tensor')
        runners[(net, 'plain')] = lambda m=reference: m(x, mode='tensor')
        runners[(net, 'in DDNN')] = (
            lambda n=net: ddnn.forward_nets(x, [n])[0][n])
        with torch.no_grad():  # same numbers, or the comparison is moot
            torch.testing.assert_close(runners[(net, 'exported')](),
                                       runners[(net, 'plain')]())

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    times = {key: [] for key in runners}
    keys = list(runners)
    rng = random.Random(0)
    with torch.inference_mode():
        for _ in range(args.warmup):
            for key in keys:
                runners[key]()
        for _ in range(args.rounds):
            rng.shuffle(keys)
            for key in keys:
                sync()
                start = time.perf_counter()
                for _ in range(args.iters):
                    runners[key]()
                sync()
                times[key].append(
                    (time.perf_counter() - start) / args.iters)

    def ips(key):
        return args.batch_size / statistics.median(times[key])

    threads = torch.get_num_threads() if device.type == 'cpu' else '-'
    print(f'device {device} (threads {threads}), batch {args.batch_size}, '
          f'input {h}x{w}, {args.rounds} interleaved rounds x {args.iters} '
          'batches, medians')
    header = ['net', 'arch', 'exported backbone', 'exported (img/s)',
              'plain mmpretrain (img/s)', 'ratio', 'in DDNN (img/s)']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    results = {}
    for net in nets:
        plain_cfg, _ = export_subnet(ddnn, net, cfg)
        ratio = ips((net, 'exported')) / ips((net, 'plain'))
        results[net] = dict(
            exported=ips((net, 'exported')),
            plain=ips((net, 'plain')),
            in_ddnn=ips((net, 'in DDNN')),
            ratio=ratio)
        lines.append('| ' + ' | '.join([
            net, net_arch_name(ddnn, net), plain_cfg['backbone']['type'],
            f'{ips((net, "exported")):.1f}', f'{ips((net, "plain")):.1f}',
            f'{ratio:.3f}', f'{ips((net, "in DDNN")):.1f}'
        ]) + ' |')
    print('\n'.join(lines))
    if args.out:
        with atomic_output(args.out) as tmp:
            mmengine.dump(results, tmp)


if __name__ == '__main__':
    main()

# Copyright (c) mmekd contributors. All rights reserved.
"""Export one net of a DDNN model to ONNX and check it against PyTorch.

    python tools/deploy/export_onnx.py CONFIG CKPT --net sub0 sub0.onnx

The graph takes normalized images (``input``, ``(N, 3, H, W)``, dynamic N,
or the fixed ``--batch-size``, which MMPretrain's Swin Transformer needs:
its traced graph bakes in the batch size) and returns class scores (``logits``). The ONNX metadata stores how to
prepare an image: ``channel_order`` of the input (that of the training
images as the model saw them), ``to_rgb`` (flip an image read as BGR, e.g.
by OpenCV, before normalizing) and ``mean``/``std`` (in ``channel_order``).
onnxruntime's output is compared with PyTorch's on random inputs
(``--atol``, default 1e-4).
"""
import argparse
import json

import torch
from mmengine.config import Config

import mmekd  # noqa: F401
from mmekd.apis import (build_model, check_net, check_net_in_checkpoint,
                        describe_channel_order, export_onnx, export_subnet,
                        input_size, load_ddnn_model, model_channel_order,
                        verify_onnx)
from mmekd.models.plain_net import ExportError
from mmekd.utils import atomic_output, check_outputs_not_inputs
from mmekd.utils.cli import add_cfg_options, read_config, tool_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export a net of a DDNN model to ONNX')
    parser.add_argument('config', help='DDNN config file')
    parser.add_argument('checkpoint', help='DDNN checkpoint')
    parser.add_argument('out', help='output .onnx file')
    parser.add_argument('--net', required=True, help="'full', 'sub0', ...")
    parser.add_argument(
        '--shape', type=int, nargs='+', help='input H [W] (default: from '
        'the test pipeline)')
    parser.add_argument(
        '--batch-size', type=int, help='a fixed batch size (default: a '
        'dynamic batch axis, refused where the graph does not hold one, as '
        "for MMPretrain's Swin Transformer)")
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset')
    parser.add_argument(
        '--atol',
        type=float,
        default=1e-4,
        help='max |onnxruntime - PyTorch| allowed on the logits')
    add_cfg_options(parser)
    return parser.parse_args(argv)


@tool_main
def main(argv=None):
    args = parse_args(argv)
    check_outputs_not_inputs(
        dict(out=args.out),
        dict(config=args.config, checkpoint=args.checkpoint))
    cfg = read_config(args.config, args.cfg_options)
    model = load_ddnn_model(cfg, args.checkpoint)
    check_net(model, args.net)
    check_net_in_checkpoint(model, args.net)
    plain_cfg, state_dict = export_subnet(model, args.net, cfg)
    plain = build_model(Config(dict(model=plain_cfg)))
    plain.load_state_dict(state_dict, strict=True)
    h, w = (args.shape[0], args.shape[-1]) if args.shape else input_size(cfg)
    pre = plain.data_preprocessor
    order = model_channel_order(cfg)
    meta = dict(
        net=args.net,
        plain_model=json.dumps(plain_cfg['backbone']),
        input_size=f'{h}x{w}',
        channel_order=order or 'unknown',
        channel_order_note=describe_channel_order(order))
    if getattr(pre, '_enable_normalize', False):
        meta.update(
            mean=json.dumps(pre.mean.flatten().tolist()),
            std=json.dumps(pre.std.flatten().tolist()),
            to_rgb=str(bool(getattr(pre, 'to_rgb', False))))
    if args.batch_size is not None and args.batch_size < 1:
        raise ExportError(f'--batch-size {args.batch_size}: give a positive '
                          'batch size, or none for a dynamic batch axis')
    with atomic_output(args.out) as tmp:
        export_onnx(plain, tmp, (3, h, w), args.opset, meta,
                    batch_size=args.batch_size)
    x = torch.randn(args.batch_size or 4, 3, h, w,
                    generator=torch.Generator().manual_seed(0))
    diff = verify_onnx(args.out, plain, x, args.atol)
    print(f'{args.out}: net {args.net} ({plain_cfg["backbone"]["type"]}, '
          f'input 3x{h}x{w}); onnxruntime vs PyTorch max |diff| = '
          f'{diff:.2e} (atol {args.atol:g})')


if __name__ == '__main__':
    main()

# Copyright (c) mmekd contributors. All rights reserved.
"""Make torchvision (ImageNet) ResNet weights the start of a DDNN run.

    python tools/convert_torchvision.py CONFIG resnet34-b627a593.pth OUT.pth
    python tools/train.py CONFIG --cfg-options load_from=OUT.pth

CONFIG's backbone must have the torchvision model's depth (e.g. ResNet-34
for ``resnet34-*.pth``). The full net gets torchvision's weights and
classifier (``fc`` -> ``head.fc``); every sub-net's BatchNorm statistics,
BatchNorm copies and classifier start from the full net's. With
``--no-head`` the classifier is left as the config initialises it (a dataset
with other classes). See docs/pretrained.md.
"""
import argparse
import os
import os.path as osp

import torch

import mmekd  # noqa: F401
from mmekd.apis import build_model, load_torchvision_weights
from mmekd.utils import atomic_output, check_outputs_not_inputs, safe_load
from mmekd.utils.cli import add_cfg_options, read_config, tool_main
from mmekd.utils.refusal import RefusalError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='torchvision ResNet weights -> DDNN checkpoint')
    parser.add_argument('config', help='DDNN config (its model is built)')
    parser.add_argument('checkpoint', help='torchvision state dict (.pth)')
    parser.add_argument('out', help='the DDNN checkpoint to write')
    parser.add_argument(
        '--no-head',
        action='store_true',
        help="drop torchvision's classifier (fc): keep the config's "
        'initial head, e.g. for a dataset with other classes')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def read_state_dict(path: str) -> dict:
    """A torchvision checkpoint: a state dict, or one under ``state_dict`` /
    ``model`` (tensors only; nothing in the file is executed)."""
    ckpt = safe_load(path, map_location='cpu')
    for key in ('state_dict', 'model'):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
    if not isinstance(ckpt, dict) or not all(
            isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise RefusalError(f'{path} is not a torchvision state dict (a '
                           'dict of tensors)')
    return ckpt


@tool_main
def main(argv=None):
    args = parse_args(argv)
    check_outputs_not_inputs(
        dict(out=args.out),
        dict(config=args.config, checkpoint=args.checkpoint))
    model = build_model(read_config(args.config, args.cfg_options))
    state_dict = read_state_dict(args.checkpoint)
    try:
        kept = load_torchvision_weights(model, state_dict,
                                        head=not args.no_head)
    except ValueError as e:  # the weights do not fit the config's model
        raise RefusalError(str(e)) from None
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    meta = dict(converted_from=osp.basename(args.checkpoint),
                head='initial (--no-head)' if kept else 'torchvision fc')
    with atomic_output(args.out) as tmp:
        torch.save(dict(meta=meta, state_dict=model.state_dict()), tmp)
    print(f'{args.out}: {len(model.state_dict())} tensors; full net from '
          f'{args.checkpoint}, sub-nets {list(model.net_names[1:])} start '
          f'from its BatchNorm statistics; classifier: {meta["head"]}')


if __name__ == '__main__':
    main()

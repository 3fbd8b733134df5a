# Copyright (c) mmekd contributors. All rights reserved.
"""Export one net of a DDNN model (full or a sub-net) as a standalone
MMPretrain config + checkpoint.

A net with the blocks of a standard ResNet becomes MMPretrain's ``ResNet`` /
``ResNet_CIFAR`` classifier; the config's hooks, wrappers and datasets
become stock MMEngine / MMPretrain ones, so that the exported net tests,
infers and fine-tunes without mmekd::

    python tools/export_subnet.py configs/ddnn_r34_cifar100.py ddnn.pth \\
        --net sub0 work_dirs/export
    # -> work_dirs/export/ddnn_r34_cifar100_sub0-resnet18.{py,pth}
"""
import argparse

import mmekd  # noqa: F401  (registers components, safe checkpoint loading)
from mmekd.apis import export_to_files
from mmekd.utils.cli import add_cfg_options, read_config, tool_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export a net of a DDNN model as a plain classifier')
    parser.add_argument('config', help='DDNN config file')
    parser.add_argument('checkpoint', help='DDNN checkpoint')
    parser.add_argument(
        'out_dir', help='folder for <name>.py (config) and <name>.pth')
    parser.add_argument(
        '--net', required=True, help="net to export: 'full', 'sub0', ...")
    parser.add_argument(
        '--name',
        help='file stem of the outputs (default: <config>_<net>-<arch>)')
    parser.add_argument(
        '--recalibrate-bn',
        type=int,
        default=0,
        metavar='N',
        help='recompute the BatchNorm statistics of the net on N batches of '
        'the train_dataloader before exporting (default: 0, keep them)')
    parser.add_argument(
        '--data-dir',
        metavar='DIR',
        help='write the images of every dataloader\'s dataset to DIR and let '
        'the exported config read them with MMPretrain\'s CustomDataset '
        '(default: only datasets without a stock MMPretrain counterpart, '
        'e.g. mmekd.Digits, are written, to OUT_DIR/<name>_data; '
        'mmekd.CIFAR10/100 become MMPretrain\'s CIFAR10/100). The '
        'images are written in their true colours')
    add_cfg_options(parser)
    return parser.parse_args(argv)


@tool_main
def main(argv=None):
    args = parse_args(argv)
    cfg_path, ckpt_path = export_to_files(
        read_config(args.config, args.cfg_options),
        args.checkpoint,
        args.net,
        args.out_dir,
        name=args.name,
        recalibrate_bn=args.recalibrate_bn,
        data_dir=args.data_dir)
    print(f'config:     {cfg_path}\ncheckpoint: {ckpt_path}')


if __name__ == '__main__':
    main()

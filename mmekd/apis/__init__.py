# Copyright (c) mmekd contributors. All rights reserved.
"""Deployment APIs: export a net of a DDNN model to files, its costs, ONNX,
torchvision weights, and mmekd's model zoo for MMPretrain's ``get_model``.

Loaded when asked for (``import mmekd.apis``, or ``mmekd.apis`` after
``import mmekd``), not by ``import mmekd``.
"""
from .channel_order import (dataset_channel_order, describe_channel_order,
                            model_channel_order)
from .costs import input_size, net_costs
from .export import (ExportError, build_model, check_exact, check_net,
                     check_net_in_checkpoint, export_subnet, export_to_files,
                     exported_checkpoint, exported_config, load_config,
                     load_ddnn_model, net_arch_name, plain_model_cfg,
                     read_checkpoint, trained_nets)
from .model_zoo import (UnpublishedWeightsError, model_index_path,
                        register_model_zoo, unpublished_weights_message)
from .onnx_export import LogitsModel, export_onnx, onnx_logits, verify_onnx
from .pretrained import load_torchvision_weights, torchvision_to_mmpretrain

__all__ = [
    'input_size', 'net_costs', 'ExportError', 'build_model', 'check_exact',
    'check_net', 'check_net_in_checkpoint', 'export_subnet',
    'export_to_files', 'exported_checkpoint', 'exported_config',
    'load_config', 'load_ddnn_model', 'net_arch_name', 'plain_model_cfg',
    'read_checkpoint', 'trained_nets',
    'model_index_path', 'register_model_zoo', 'UnpublishedWeightsError',
    'unpublished_weights_message', 'LogitsModel', 'export_onnx',
    'onnx_logits', 'verify_onnx', 'dataset_channel_order',
    'describe_channel_order', 'model_channel_order',
    'load_torchvision_weights', 'torchvision_to_mmpretrain'
]

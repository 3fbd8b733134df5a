# Copyright (c) mmekd contributors. All rights reserved.
"""A fence around a heap overflow in oneDNN's CPU convolution.

The bug (torch 2.14.1 with its oneDNN 3.12, AVX2; reproduced in pure torch
by ``tests/test_upstream/test_onednn_strided_1x1_nhwc.py``, evidence in
``docs/performance.md``, "The oneDNN fence"): the weight gradient of a 1x1
convolution with a stride > 1 on a channels-last input with fewer input
channels than oneDNN's block (8 floats on AVX2) writes past its workspace.
oneDNN books ``out_pixels * ic`` floats but copies each row of output
pixels to ``pixel * ic_block``.

mmekd reaches it on the CPU with oneDNN on: ``torch.compile`` (inductor
makes every convolution channels-last there), ``channels_last=True`` or
MMEngine's ``compile=True``, with ResNet's stride-2 1x1 projections at the
narrow widths of tests and benchmark proxies.

The fence: :func:`onednn_hazards` names such convolutions; a compiled step
keeps them contiguous (inductor's ``layout_optimization=False``), eager
channels-last training and a whole step compiled by MMEngine are refused
(:func:`refuse_channels_last`).
"""
from typing import List, Optional

import torch
import torch.nn as nn
from torch.nn.modules.conv import _ConvNd

from .refusal import RefusalError

# oneDNN's float block per CPU capability: channels below it overflow.
# AVX2 measured; anything else takes the widest block (AVX-512's 16).
ONEDNN_CHANNEL_BLOCK = {'AVX2': 8}
DEFAULT_CHANNEL_BLOCK = 16

# Weight dtypes oneDNN convolves on the CPU (float64 goes to ATen's own
# kernels).
ONEDNN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class OneDNNFenceError(RefusalError, ValueError):
    """Training would reach the overflowing oneDNN kernel."""


def channel_block() -> int:
    """oneDNN's channel block on this CPU (see the module docstring)."""
    return ONEDNN_CHANNEL_BLOCK.get(torch.backends.cpu.get_cpu_capability(),
                                    DEFAULT_CHANNEL_BLOCK)


def onednn_enabled(device: torch.device) -> bool:
    """Whether convolutions on ``device`` may run in oneDNN."""
    kind = device.type if hasattr(device, 'type') else torch.device(
        device).type
    return (kind == 'cpu'
            and torch.backends.mkldnn.enabled
            and torch.backends.mkldnn.is_available())


def strided_1x1_convs(module: nn.Module, block: int) -> List[str]:
    """Names of the trainable 1x1 convolutions of ``module`` with a stride >
    1 and fewer than ``block`` input channels per group, in a dtype oneDNN
    convolves."""
    names = []
    for name, m in module.named_modules():
        if (isinstance(m, _ConvNd) and not m.transposed
                and all(k == 1 for k in m.kernel_size)
                and any(s > 1 for s in m.stride)
                and m.in_channels // m.groups < block
                and m.weight.requires_grad
                and m.weight.dtype in ONEDNN_DTYPES):
            names.append(name)
    return names


def onednn_hazards(module: nn.Module,
                   device: Optional[torch.device] = None) -> List[str]:
    """The convolutions of ``module`` whose weight gradient would run in the
    overflowing oneDNN kernel if their input were channels-last on
    ``device`` (default: where ``module``'s first parameter is); empty off
    the CPU or with oneDNN disabled."""
    if device is None:
        param = next(module.parameters(), None)
        device = param.device if param is not None else 'cpu'
    if not onednn_enabled(device):
        return []
    return strided_1x1_convs(module, channel_block())


def describe(hazards: List[str]) -> str:
    """The convolutions, shortened for a one-line message."""
    shown = ', '.join(hazards[:3]) + (
        f' and {len(hazards) - 3} more' if len(hazards) > 3 else '')
    return (f'{len(hazards)} strided 1x1 convolution(s) with fewer than '
            f'{channel_block()} input channels ({shown})')


def refuse_channels_last(module: nn.Module, device: torch.device,
                         setting: str) -> None:
    """Raise if ``setting`` (which makes ``module``'s convolutions
    channels-last while training on ``device``) would reach the overflowing
    oneDNN kernel."""
    hazards = onednn_hazards(module, device)
    if hazards:
        raise OneDNNFenceError(
            f'{setting} on the CPU with oneDNN would back-propagate '
            f'{describe(hazards)} in channels-last layout, where torch '
            f'{torch.__version__.split("+")[0]}\'s oneDNN kernel writes past '
            'its buffer (heap corruption, wrong gradients; see '
            'mmekd/utils/onednn_fence.py): train these widths without it '
            '(compile_step keeps them in a safe layout), widen the nets to '
            f'>= {channel_block()} channels, or set '
            'torch.backends.mkldnn.enabled = False')

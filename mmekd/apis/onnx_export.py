# Copyright (c) mmekd contributors. All rights reserved.
"""ONNX export of an exported (plain, single-net) classifier."""
import warnings
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from mmekd.models.plain_net import ExportError


class LogitsModel(nn.Module):
    """``model(inputs, mode='tensor')`` as a plain ``forward(inputs)``:
    normalized images ``(N, 3, H, W)`` in, class scores ``(N, C)`` out (the
    data preprocessor's mean/std/to_rgb are not part of the graph)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs, mode='tensor')


def export_onnx(model: nn.Module,
                out_file: str,
                input_shape: Sequence[int],
                opset_version: int = 17,
                metadata: Optional[dict] = None,
                batch_size: Optional[int] = None) -> None:
    """Export a single-net classifier to ONNX.

    Uses the TorchScript exporter (``dynamo=False``): the torch.export one
    needs ``onnxscript``, which this stack does not install. Its tracer
    can bake the traced batch size into a graph (MMPretrain's Swin window
    partition does): a dynamic batch axis is checked on a batch of 2 after
    export, and refused where it does not hold.

    Args:
        model (nn.Module): An MMPretrain classifier (e.g. from
            :func:`mmekd.apis.export_subnet`).
        out_file (str): The ``.onnx`` file.
        input_shape (Sequence[int]): ``(C, H, W)`` of one image.
        opset_version (int): ONNX opset. Defaults to 17.
        metadata (dict, optional): Strings stored as the model's
            ``metadata_props`` (e.g. net, mean, std).
        batch_size (int, optional): A fixed batch size. Defaults to None
            (a dynamic batch axis).

    Raises:
        ExportError: The graph does not hold a dynamic batch.
    """
    wrapper = LogitsModel(model).eval()
    dummy = torch.zeros(batch_size or 1, *input_shape)
    dynamic = {} if batch_size else dict(dynamic_axes={
        'input': {0: 'batch'},
        'logits': {0: 'batch'}
    })
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one.
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(
            wrapper, (dummy, ),
            out_file,
            dynamo=False,
            input_names=['input'],
            output_names=['logits'],
            opset_version=opset_version,
            **dynamic)
    if not batch_size:
        pair = torch.randn(2, *input_shape,
                           generator=torch.Generator().manual_seed(0))
        try:
            verify_onnx(out_file, model, pair, atol=1e-3)
        except AssertionError as e:
            raise ExportError(
                f'the ONNX graph of {type(model.backbone).__name__} does not '
                f'hold a dynamic batch ({e} on a batch of 2): the exporter '
                'baked the traced batch size into it; export with a fixed '
                'batch size (batch_size=N, tools/deploy/export_onnx.py '
                '--batch-size N)') from None
    if metadata:
        import onnx
        proto = onnx.load(out_file)
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
        onnx.save(proto, out_file)


def onnx_logits(onnx_file: str, inputs: torch.Tensor) -> np.ndarray:
    """Run ``inputs`` through the ONNX model with onnxruntime (CPU)."""
    import onnxruntime as ort
    session = ort.InferenceSession(
        onnx_file, providers=['CPUExecutionProvider'])
    return session.run(None, {'input': inputs.cpu().numpy()})[0]


@torch.no_grad()
def verify_onnx(onnx_file: str,
                model: nn.Module,
                inputs: torch.Tensor,
                atol: float = 1e-4) -> float:
    """Compare onnxruntime's logits with PyTorch's.

    Returns:
        float: The largest absolute difference.

    Raises:
        AssertionError: It exceeds ``atol``.
    """
    expected = LogitsModel(model).eval()(inputs).cpu().numpy()
    got = onnx_logits(onnx_file, inputs)
    if got.shape != expected.shape:
        raise AssertionError(f'ONNX output shape {got.shape} != PyTorch '
                             f'{expected.shape}')
    diff = float(np.abs(got - expected).max())
    if not diff <= atol:
        raise AssertionError(f'ONNX and PyTorch logits differ by {diff:.3g} '
                             f'> atol {atol:g}')
    return diff

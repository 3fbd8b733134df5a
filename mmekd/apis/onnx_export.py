# Copyright (c) mmekd contributors. All rights reserved.
"""ONNX export of an exported (plain, single-net) classifier."""
import warnings
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn


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
                metadata: Optional[dict] = None) -> None:
    """Export a single-net classifier to ONNX with a dynamic batch axis.

    Uses the TorchScript exporter (``dynamo=False``): the torch.export one
    needs ``onnxscript``, which this stack does not install.

    Args:
        model (nn.Module): An MMPretrain classifier (e.g. from
            :func:`mmekd.apis.export_subnet`).
        out_file (str): The ``.onnx`` file.
        input_shape (Sequence[int]): ``(C, H, W)`` of one image.
        opset_version (int): ONNX opset. Defaults to 17.
        metadata (dict, optional): Strings stored as the model's
            ``metadata_props`` (e.g. net, mean, std).
    """
    wrapper = LogitsModel(model).eval()
    dummy = torch.zeros(1, *input_shape)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one.
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(
            wrapper, (dummy, ),
            out_file,
            dynamo=False,
            input_names=['input'],
            output_names=['logits'],
            dynamic_axes={
                'input': {0: 'batch'},
                'logits': {0: 'batch'}
            },
            opset_version=opset_version)
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

# Copyright (c) mmekd contributors. All rights reserved.
"""CIFAR-style augmentation (pad + random crop + horizontal flip) done on the
whole batch on the training device, in the data preprocessor."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.utils import ClsDataPreprocessor

from mmekd.registry import MODELS
from mmekd.utils.numbers import config_int, config_number


def random_pad_crop_flip(
    inputs: torch.Tensor,
    padding: int = 4,
    crop_size: Optional[int] = None,
    flip_prob: float = 0.5,
    generator: Optional[torch.Generator] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: zero-pad by ``padding``, crop ``crop_size`` at a random
    position, flip horizontally with probability ``flip_prob``. Same
    semantics as MMPretrain's ``RandomCrop(crop_size, padding)`` (pad value
    0) followed by ``RandomFlip(prob, 'horizontal')``.

    Args:
        inputs (Tensor): Images ``(N, C, H, W)``, any dtype.
        padding (int): Zero padding on every side. Defaults to 4.
        crop_size (int, optional): Square crop size. Defaults to ``H`` (the
            input must then be square).
        flip_prob (float): Probability of a horizontal flip.
        generator (torch.Generator, optional): Random source, on the
            inputs' device.

    Returns:
        tuple[Tensor, Tensor, Tensor]: The augmented batch
        ``(N, C, crop, crop)``, the crop offsets ``(N, 2)`` (row, column in
        the padded image) and the flip mask ``(N,)``.
    """
    n, _, h, w = inputs.shape
    crop = h if crop_size is None else int(crop_size)
    if crop_size is None and h != w:
        raise ValueError(f'crop_size is needed for non-square inputs '
                         f'({h}x{w})')
    hp, wp = h + 2 * padding, w + 2 * padding
    if crop > hp or crop > wp:
        raise ValueError(f'crop_size {crop} is larger than the padded '
                         f'input {hp}x{wp}')
    device = inputs.device
    padded = F.pad(inputs, (padding, ) * 4) if padding else inputs
    rows = torch.randint(
        0, hp - crop + 1, (n, ), generator=generator, device=device)
    cols = torch.randint(
        0, wp - crop + 1, (n, ), generator=generator, device=device)
    flips = torch.rand(n, generator=generator, device=device) < flip_prob
    ar = torch.arange(crop, device=device)
    row_idx = rows[:, None] + ar  # (N, crop)
    # A flipped image reads its columns right to left.
    col_idx = torch.where(flips[:, None], cols[:, None] + ar.flip(0),
                          cols[:, None] + ar)  # (N, crop)
    batch_idx = torch.arange(n, device=device)[:, None, None]
    # Advanced indices first: (N, crop, crop, C) -> (N, C, crop, crop)
    out = padded[batch_idx, :, row_idx[:, :, None], col_idx[:, None, :]]
    out = out.permute(0, 3, 1, 2).contiguous()
    return out, torch.stack([rows, cols], dim=1), flips


@MODELS.register_module()
class GPUAugmentPreprocessor(ClsDataPreprocessor):
    """:class:`ClsDataPreprocessor` that also pads, randomly crops and flips
    the training batch on the device (CIFAR augmentation), so the data
    loader only decodes and stacks: one data pass feeds every net, and the
    CPU workers stop being the bottleneck for small images.

    Use it with a train pipeline without ``RandomCrop``/``RandomFlip`` and,
    for speed, ``collate_fn=dict(type='default_collate')`` (one stacked
    ``uint8`` batch, one host-to-device copy). Validation and test batches
    (``training=False``) are not augmented. ImageNet-style data should keep
    MMPretrain's pipeline (decoding and resizing dominate there).

    Args:
        padding (int): Zero padding (pixel value 0, before normalisation).
            Defaults to 4.
        crop_size (int, optional): Crop size. Defaults to the input size.
        flip_prob (float): Horizontal flip probability. Defaults to 0.5.
        seed (int, optional): Seed of a private generator on the device,
            for a reproducible augmentation stream independent of other
            random draws. Defaults to None (the global generator).
        **kwargs: Other arguments of :class:`ClsDataPreprocessor` (``mean``,
            ``std``, ``to_rgb``, ``num_classes``, ``batch_augments``...).
    """

    def __init__(self,
                 padding: int = 4,
                 crop_size: Optional[int] = None,
                 flip_prob: float = 0.5,
                 seed: Optional[int] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.padding = config_int(padding, 'padding')
        self.crop_size = config_int(crop_size, 'crop_size', minimum=1,
                                    allow_none=True)
        self.flip_prob = config_number(flip_prob, 'flip_prob', maximum=1.0)
        self.seed = seed
        self._generator = None

    def _get_generator(self, device) -> Optional[torch.Generator]:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def forward(self, data: dict, training: bool = False) -> dict:
        if training:
            inputs = self.cast_data(data['inputs'])
            if not isinstance(inputs, torch.Tensor):
                # pseudo_collate: a list of equally sized images
                inputs = torch.stack(list(inputs))
            inputs, _, _ = random_pad_crop_flip(
                inputs, self.padding, self.crop_size, self.flip_prob,
                self._get_generator(inputs.device))
            data = dict(data, inputs=inputs)
        return super().forward(data, training)

# Copyright (c) mmekd contributors. All rights reserved.
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmekd.registry import MODELS
from mmekd.utils.numbers import config_number


def attention_map(feat: torch.Tensor, p: float = 2.0,
                  mode: str = 'activation') -> torch.Tensor:
    """Spatial attention map of a feature map.

    Args:
        feat (Tensor): ``(N, C, H, W)`` features.
        p (float): Power of the activation. Defaults to 2.
        mode (str): ``'activation'``: channel mean of ``|F|^p``, flattened
            and L2-normalised (Zagoruyko & Komodakis, 2017).
            ``'spatial_softmax'``: channel mean of ``|F|^p``, flattened, then
            a softmax over positions (Hou et al., 2019).

    Returns:
        Tensor: ``(N, H*W)`` attention maps, in float32.
    """
    f = feat.float()
    # p = 2: x * x equals |x| ** 2 bit for bit, in value and gradient, and
    # autograd keeps one float32 copy of the feature map instead of two.
    a = (f.square() if p == 2 else f.abs().pow(p)).mean(dim=1).flatten(1)
    if mode == 'activation':
        return F.normalize(a, p=2, dim=1)
    if mode == 'spatial_softmax':
        return F.softmax(a, dim=1)
    raise ValueError(f"mode must be 'activation' or 'spatial_softmax', "
                     f'got {mode!r}')


@MODELS.register_module()
class AttentionTransferLoss(nn.Module):
    """Attention distillation between same-resolution feature maps.

    For every pair of student/teacher features the loss is the mean, over
    samples and positions, of the squared difference of their attention maps
    (:func:`attention_map`); pairs are summed. The teacher features are
    detached. Computed in float32, also under mixed precision.

    Args:
        p (float): Power applied to ``|F|``. Defaults to 2.
        mode (str): ``'activation'`` (default) or ``'spatial_softmax'``.
        loss_weight (float): Weight of the summed loss. Defaults to 1.0.
            (The attention-transfer paper uses this per-pair mean squared
            difference with beta=1000 for a pretrained teacher; for DDNN
            sub-nets trained from scratch :class:`DDNNClassifier` defaults to
            10, which keeps the attention gradients below those of CE.)
    """

    def __init__(self,
                 p: float = 2.0,
                 mode: str = 'activation',
                 loss_weight: float = 1.0):
        super().__init__()
        if mode not in ('activation', 'spatial_softmax'):
            raise ValueError("mode must be 'activation' or "
                             f"'spatial_softmax', got {mode!r}")
        self.p = config_number(p, 'AttentionTransferLoss.p', positive=True)
        self.mode = mode
        self.loss_weight = config_number(
            loss_weight, 'AttentionTransferLoss.loss_weight')

    def forward(
        self, student_feats: Union[torch.Tensor, Sequence[torch.Tensor]],
        teacher_feats: Union[torch.Tensor, Sequence[torch.Tensor]]
    ) -> torch.Tensor:
        """
        Args:
            student_feats (Tensor | Sequence[Tensor]): ``(N, C, H, W)``
                student features, or a sequence of them.
            teacher_feats (Tensor | Sequence[Tensor]): Teacher features of
                the same shapes, in the same order.

        Returns:
            Tensor: The weighted scalar loss.
        """
        if isinstance(student_feats, torch.Tensor):
            student_feats, teacher_feats = [student_feats], [teacher_feats]
        if len(student_feats) != len(teacher_feats):
            raise ValueError(f'{len(student_feats)} student features but '
                             f'{len(teacher_feats)} teacher features')
        total = 0.
        with torch.autocast(student_feats[0].device.type, enabled=False):
            for s, t in zip(student_feats, teacher_feats):
                if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
                    raise ValueError(
                        'attention distillation needs features of the same '
                        f'batch and resolution, got student {tuple(s.shape)} '
                        f'and teacher {tuple(t.shape)}')
                a_s = attention_map(s, self.p, self.mode)
                a_t = attention_map(t.detach(), self.p, self.mode)
                total = total + (a_s - a_t).pow(2).mean()
        return self.loss_weight * total

# Copyright (c) mmekd contributors. All rights reserved.
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmekd.registry import MODELS
from mmekd.utils.numbers import config_number


@MODELS.register_module()
class KLDivLoss(nn.Module):
    """Knowledge-distillation KL divergence on temperature-softened class
    posteriors (Hinton et al., 2015).

    .. math::
        L = w \\cdot T^2 \\cdot \\frac{1}{N} \\sum_n
            \\mathrm{KL}\\big(\\mathrm{softmax}(z^t_n / T) \\,\\|\\,
            \\mathrm{softmax}(z^s_n / T)\\big)

    The teacher logits are detached (no gradient reaches the teacher) and the
    loss is computed in float32, also under mixed precision.

    Args:
        tau (float): Temperature ``T`` (> 0). Defaults to 4.0.
        loss_weight (float): Weight ``w``. Defaults to 1.0.
        reduction (str): ``'batchmean'`` (mean over samples of the per-sample
            KL, default), ``'sum'`` or ``'none'`` (one value per sample).
    """

    def __init__(self,
                 tau: float = 4.0,
                 loss_weight: float = 1.0,
                 reduction: str = 'batchmean'):
        super().__init__()
        if reduction not in ('batchmean', 'sum', 'none'):
            raise ValueError("reduction must be 'batchmean', 'sum' or "
                             f"'none', got {reduction!r}")
        self.tau = config_number(tau, 'KLDivLoss.tau', positive=True)
        self.loss_weight = config_number(loss_weight,
                                         'KLDivLoss.loss_weight')
        self.reduction = reduction

    def forward(self, student_logits: torch.Tensor,
                teacher_logits: torch.Tensor) -> torch.Tensor:
        """
        Args:
            student_logits (Tensor): ``(N, C)`` logits of the student.
            teacher_logits (Tensor): ``(N, C)`` logits of the teacher.

        Returns:
            Tensor: The weighted loss (a scalar unless ``reduction='none'``).
        """
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f'student logits {tuple(student_logits.shape)} and teacher '
                f'logits {tuple(teacher_logits.shape)} differ in shape')
        with torch.autocast(student_logits.device.type, enabled=False):
            log_p_s = F.log_softmax(student_logits.float() / self.tau, dim=1)
            log_p_t = F.log_softmax(
                teacher_logits.detach().float() / self.tau, dim=1)
            kl = F.kl_div(log_p_s, log_p_t, reduction='none',
                          log_target=True).sum(dim=1)
            kl = kl * (self.tau**2)
            if self.reduction == 'batchmean':
                kl = kl.mean()
            elif self.reduction == 'sum':
                kl = kl.sum()
        return self.loss_weight * kl

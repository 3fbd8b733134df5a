# Copyright (c) mmekd contributors. All rights reserved.
"""The loss of a DDNN trained with Embedded Knowledge Distillation: which
terms each net gets, with which weights.

For every trained net ``n`` and every trained sub-net ``s``::

    loss_ce_<n>  the head's label loss, x full_loss_weight (full net) or
                 x sub_ce_weight (sub-net; 0 leaves the term out)
    loss_kl_<s>  kl_loss(logits_s, logits_full.detach()), on the teacher's
                 kl_topk highest-scoring classes if set
    loss_at_<s>  at_loss(stage outputs of s, same stages of full, detached)

Example::

    >>> ekd = EKDLoss(kl_loss=KLDivLoss(), at_loss=AttentionTransferLoss(),
    ...               stages=(0, 1, 2, 3), at_stages=(2, 3))
    >>> ekd.terms(logits, feats, target, head.loss_by_target)
    {'loss_ce_full': ..., 'loss_ce_sub0': ..., 'loss_kl_sub0': ...,
     'loss_at_sub0': ...}
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from mmekd.utils.numbers import config_int, config_number
from mmekd.vocabulary import FULL_NET

# ``label_loss(score, target)``: the head's loss of one net's logits.
LabelLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class EKDLoss(nn.Module):
    """The EKD loss terms of a DDNN's nets (see the module docstring).

    Args:
        kl_loss (nn.Module, optional): Logit distillation loss; None: off.
        at_loss (nn.Module, optional): Attention distillation loss on the
            stage outputs of ``at_stages``; None: off.
        stages (Sequence[int]): The stages whose outputs the nets return,
            in order (the backbone's ``out_indices``).
        at_stages (Sequence[int], optional): Stages matched by ``at_loss``,
            each one of ``stages``. Defaults to all of ``stages``.
        sub_ce_weight (float): Weight (>= 0) of every sub-net's label loss.
        full_loss_weight (float): Weight (> 0) of the full net's label
            loss.
        kl_topk (int, optional): KL on the teacher's top ``k`` classes.
        num_classes (int): Classes of the head (bounds ``kl_topk``).
        has_sub_nets (bool): Whether there are sub-nets (a sub-net must get
            some loss).
    """

    def __init__(self,
                 kl_loss: Optional[nn.Module],
                 at_loss: Optional[nn.Module],
                 stages: Sequence[int],
                 at_stages: Optional[Sequence[int]] = None,
                 sub_ce_weight: float = 1.0,
                 full_loss_weight: float = 1.0,
                 kl_topk: Optional[int] = None,
                 num_classes: int = 1,
                 has_sub_nets: bool = True):
        super().__init__()
        self.kl_loss, self.at_loss = kl_loss, at_loss
        stages = sorted(stages)
        self.at_stages = tuple(stages if at_stages is None else at_stages)
        if at_loss is not None and not self.at_stages:
            raise ValueError('at_stages is empty but at_loss is set; use '
                             'at_loss=None to turn attention distillation '
                             'off')
        bad = [s for s in self.at_stages if s not in stages]
        if bad:
            raise ValueError(
                f'at_stages {self.at_stages}: stages {bad} are not in '
                f'backbone.out_indices {tuple(stages)}; add them there '
                f'or remove them from at_stages')
        # Positions of the distilled stages in a net's stage outputs.
        self._at_pos = tuple(stages.index(s) for s in self.at_stages)
        self.sub_ce_weight = config_number(sub_ce_weight, 'sub_ce_weight')
        self.full_loss_weight = config_number(
            full_loss_weight, 'full_loss_weight', positive=True)
        if (self.sub_ce_weight == 0 and has_sub_nets
                and not self.distills):
            raise ValueError(
                'sub_ce_weight=0 with kl_loss=None and at_loss=None leaves '
                'the sub-nets without any loss; set a distillation loss or '
                'sub_ce_weight > 0')
        self.kl_topk = config_int(
            kl_topk, 'kl_topk', 1, num_classes, allow_none=True,
            note="(the head's num_classes)")
        if kl_topk is not None and kl_loss is None:
            raise ValueError('kl_topk is set but kl_loss is None; set '
                             'kl_loss or kl_topk=None')

    @property
    def distills(self) -> bool:
        """Whether sub-nets learn from the full net (then the teacher must
        run before its students)."""
        return self.kl_loss is not None or self.at_loss is not None

    @property
    def distilled_stages(self) -> Tuple[int, ...]:
        """Stages whose outputs distillation reads (empty without
        ``at_loss``)."""
        return self.at_stages if self.at_loss is not None else ()

    def label_terms(self, net: str, score: torch.Tensor,
                    target: torch.Tensor,
                    label_loss: LabelLoss) -> Dict[str, torch.Tensor]:
        """``{'loss_ce_<net>': ...}``, weighted; nothing for weight 0."""
        w = self.full_loss_weight if net == FULL_NET else self.sub_ce_weight
        if w == 0:
            return {}
        ce = label_loss(score, target)
        return {f'loss_ce_{net}': ce if w == 1 else w * ce}

    def distill_terms(self, net: str, logits: torch.Tensor,
                      feats: Sequence[torch.Tensor],
                      teacher_logits: torch.Tensor,
                      teacher_feats: Sequence[torch.Tensor]
                      ) -> Dict[str, torch.Tensor]:
        """The distillation terms of student ``net`` (the teacher is
        detached here)."""
        losses = {}
        if self.kl_loss is not None:
            student, teacher = logits, teacher_logits.detach()
            if self.kl_topk is not None:
                top = teacher.topk(self.kl_topk, dim=1).indices
                student, teacher = student.gather(1, top), \
                    teacher.gather(1, top)
            losses[f'loss_kl_{net}'] = self.kl_loss(student, teacher)
        if self.at_loss is not None:
            losses[f'loss_at_{net}'] = self.at_loss(
                [feats[p] for p in self._at_pos],
                [teacher_feats[p].detach() for p in self._at_pos])
        return losses

    def net_terms(self, net: str, logits: torch.Tensor,
                  feats: Sequence[torch.Tensor], target: torch.Tensor,
                  label_loss: LabelLoss,
                  teacher: Optional[Tuple[torch.Tensor, Sequence]] = None
                  ) -> Dict[str, torch.Tensor]:
        """All terms of one net: its label loss and, for a sub-net given
        the ``teacher``'s ``(logits, stage outputs)``, its distillation."""
        losses = self.label_terms(net, logits, target, label_loss)
        if net != FULL_NET and self.distills:
            if teacher is None:
                raise ValueError('distillation needs the full net (teacher)')
            losses.update(self.distill_terms(net, logits, feats, *teacher))
        return losses

    def terms(self, logits: Dict[str, torch.Tensor],
              feats: Dict[str, Sequence[torch.Tensor]],
              target: torch.Tensor,
              label_loss: LabelLoss) -> Dict[str, torch.Tensor]:
        """The terms of every net in ``logits`` (the teacher's first, then
        the students' in order)."""
        teacher = None
        if FULL_NET in logits:
            teacher = (logits[FULL_NET], feats[FULL_NET])
        losses = {}
        for net, score in logits.items():
            losses.update(self.label_terms(net, score, target, label_loss))
        for net in logits:
            if net != FULL_NET and self.distills:
                if teacher is None:
                    raise ValueError(
                        'distillation needs the full net (teacher)')
                losses.update(self.distill_terms(net, logits[net],
                                                 feats[net], *teacher))
        return losses

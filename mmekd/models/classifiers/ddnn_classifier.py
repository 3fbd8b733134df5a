# Copyright (c) mmekd contributors. All rights reserved.
"""DDNN with Embedded Knowledge Distillation (EKD): the classifier that trains
a full net and all its sub-nets on the same batch."""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.structures import DataSample

from mmekd.registry import MODELS
from ..utils import FULL_NET


@MODELS.register_module()
class DDNNClassifier(ImageClassifier):
    """Depth-level dynamic classifier trained with EKD.

    One training iteration runs the full net (teacher) and every sub-net
    (students) of a :class:`DepthDynamicResNet` on the same batch. The loss
    is, for every net ``n`` and every sub-net ``s``::

        loss_ce_<n>  classification loss of the head (CE, label smoothing...)
        loss_kl_<s>  KLDivLoss(logits_s, logits_full.detach())
        loss_at_<s>  AttentionTransferLoss(stage features of s,
                                            same stages of full, detached)

    All terms are logged separately and summed by MMEngine. Setting
    ``kl_loss=None`` and ``at_loss=None`` gives DDNN without EKD.

    Evaluation runs every net in one pass: ``pred_score`` is the prediction of
    ``predict_net`` and, with ``eval_all_nets``, each data sample carries
    ``net_scores`` (``(num_nets, num_classes)`` softmax scores) and
    ``net_names`` for :class:`mmekd.MultiNetAccuracy`.

    Args:
        backbone (dict): A :class:`DepthDynamicResNet` (or CIFAR) config.
        neck (dict, optional): Neck applied to the last stage's output of
            each net, e.g. ``GlobalAveragePooling``.
        head (dict): A :class:`MultiNetClsHead` config; its ``net_names`` are
            taken from the backbone.
        kl_loss (dict, optional): Logit distillation loss from the full net
            to each sub-net. Defaults to ``KLDivLoss(tau=4, loss_weight=1)``.
            ``None`` disables it.
        at_loss (dict, optional): Attention distillation loss on the stage
            outputs listed in ``at_stages``. Defaults to
            ``AttentionTransferLoss(p=2, mode='activation',
            loss_weight=1000)``. ``None`` disables it.
        at_stages (Sequence[int]): Stages (0-based) whose outputs are matched
            by attention distillation; each must be in the backbone's
            ``out_indices``. Defaults to all of the backbone's stages.
        predict_net (str): Net used by ``predict`` and ``tensor`` mode.
            Defaults to ``'full'``.
        eval_all_nets (bool): ``predict`` also scores every other net.
            Defaults to True.
        **kwargs: Other arguments of :class:`ImageClassifier`
            (``data_preprocessor``, ``train_cfg``, ``init_cfg``...).
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 neck: Optional[dict] = None,
                 kl_loss: Optional[dict] = dict(
                     type='mmekd.KLDivLoss', tau=4.0, loss_weight=1.0),
                 at_loss: Optional[dict] = dict(
                     type='mmekd.AttentionTransferLoss',
                     p=2.0,
                     mode='activation',
                     loss_weight=1000.0),
                 at_stages: Optional[Sequence[int]] = None,
                 predict_net: str = FULL_NET,
                 eval_all_nets: bool = True,
                 **kwargs):
        if not isinstance(backbone, nn.Module):
            backbone = MODELS.build(backbone)
        if not hasattr(backbone, 'forward_nets'):
            raise TypeError(
                'DDNNClassifier needs a depth-dynamic backbone with '
                f'forward_nets() (e.g. mmekd.DepthDynamicResNet), got '
                f'{type(backbone).__name__}')
        if head is None:
            raise ValueError('DDNNClassifier needs a head config')
        if not isinstance(head, nn.Module):
            head = copy.deepcopy(head)
            given = head.get('net_names')
            if given is not None and list(given) != backbone.net_names:
                raise ValueError(
                    f'head.net_names {list(given)} do not match the '
                    f"backbone's nets {backbone.net_names}")
            head['net_names'] = backbone.net_names
            head = MODELS.build(head)
        if not hasattr(head, 'classifier'):
            raise TypeError('DDNNClassifier needs a head that classifies '
                            'per net (e.g. mmekd.MultiNetClsHead), got '
                            f'{type(head).__name__}')
        super().__init__(backbone=backbone, neck=neck, head=head, **kwargs)

        out_indices = sorted(self.backbone.out_indices)
        last = self.backbone.num_stages - 1
        if last not in out_indices:
            raise ValueError(
                f'backbone.out_indices {tuple(out_indices)} must contain the '
                f'last stage ({last}): the head classifies its output')
        self._stage_pos = {s: i for i, s in enumerate(out_indices)}
        if at_stages is None:
            at_stages = out_indices
        at_stages = tuple(int(s) for s in at_stages)
        bad = [s for s in at_stages if s not in self._stage_pos]
        if bad:
            raise ValueError(
                f'at_stages {at_stages}: stages {bad} are not in '
                f'backbone.out_indices {tuple(out_indices)}; add them there '
                f'or remove them from at_stages')
        self.at_stages = at_stages
        self.kl_loss = MODELS.build(kl_loss) if kl_loss else None
        self.at_loss = MODELS.build(at_loss) if at_loss else None
        if predict_net not in self.backbone.net_names:
            raise ValueError(f'predict_net must be one of '
                             f'{self.backbone.net_names}, got {predict_net!r}')
        self.predict_net = predict_net
        self.eval_all_nets = eval_all_nets

    @property
    def net_names(self) -> List[str]:
        return self.backbone.net_names

    def _check_net(self, net: str) -> str:
        if net not in self.backbone.net_names:
            raise ValueError(f'unknown net {net!r}; this model has '
                             f'{self.backbone.net_names}')
        return net

    # ------------------------------------------------------------------ #
    # features and scores
    # ------------------------------------------------------------------ #
    def _pool(self, stage_outs: Tuple[torch.Tensor]) -> Tuple[torch.Tensor]:
        x = (stage_outs[-1], )
        return self.neck(x) if self.with_neck else x

    def forward_nets(
        self,
        inputs: torch.Tensor,
        nets: Optional[Sequence[str]] = None
    ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Tuple[torch.Tensor]]]:
        """Logits and stage outputs of several nets on one batch.

        Returns:
            tuple[dict, dict]: ``{net: logits (N, C)}`` and
            ``{net: stage outputs at backbone.out_indices}``.
        """
        nets = list(nets or self.net_names)
        feats = dict(zip(nets, self.backbone.forward_nets(inputs, nets)))
        logits = {
            net: self.head(self._pool(feats[net]), net=net)
            for net in nets
        }
        return logits, feats

    def extract_feat(self,
                     inputs: torch.Tensor,
                     stage: str = 'neck',
                     net: Optional[str] = None):
        """Features of one net (default ``predict_net``); see
        :meth:`ImageClassifier.extract_feat`."""
        if stage not in ('backbone', 'neck', 'pre_logits'):
            raise ValueError(f"stage must be 'backbone', 'neck' or "
                             f"'pre_logits', got {stage!r}")
        net = self._check_net(net or self.predict_net)
        x = self.backbone.forward_nets(inputs, [net])[0]
        if stage == 'backbone':
            return x
        x = self._pool(x)
        return x if stage == 'neck' else self.head.pre_logits(x)

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        if mode == 'tensor':
            net = self.predict_net
            return self.forward_nets(inputs, [net])[0][net]
        return super().forward(inputs, data_samples, mode)

    # ------------------------------------------------------------------ #
    # training
    # ------------------------------------------------------------------ #
    def loss(self, inputs: torch.Tensor,
             data_samples: List[DataSample]) -> Dict[str, torch.Tensor]:
        """CE for every net plus EKD terms for every sub-net."""
        logits, feats = self.forward_nets(inputs)
        return self.compute_losses(logits, feats, data_samples)

    def compute_losses(self, logits: Dict[str, torch.Tensor],
                       feats: Dict[str, Tuple[torch.Tensor]],
                       data_samples: List[DataSample]
                       ) -> Dict[str, torch.Tensor]:
        """The loss terms for the nets present in ``logits``.

        The teacher (full net) must be among them when a sub-net is.
        """
        losses = dict()
        for net, score in logits.items():
            losses[f'loss_ce_{net}'] = self.head.loss_by_net(
                score, data_samples)
        students = [n for n in logits if n != FULL_NET]
        if students and FULL_NET not in logits:
            raise ValueError('distillation needs the full net (teacher)')
        for net in students:
            if self.kl_loss is not None:
                losses[f'loss_kl_{net}'] = self.kl_loss(
                    logits[net], logits[FULL_NET].detach())
            if self.at_loss is not None and self.at_stages:
                pos = [self._stage_pos[s] for s in self.at_stages]
                losses[f'loss_at_{net}'] = self.at_loss(
                    [feats[net][p] for p in pos],
                    [feats[FULL_NET][p].detach() for p in pos])
        return losses

    # ------------------------------------------------------------------ #
    # inference
    # ------------------------------------------------------------------ #
    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                net: Optional[str] = None) -> List[DataSample]:
        """Predictions of ``net`` (default ``predict_net``); with
        ``eval_all_nets`` every net is scored in the same pass."""
        net = self._check_net(net or self.predict_net)
        nets = self.net_names if self.eval_all_nets else [net]
        logits, _ = self.forward_nets(inputs, nets)
        preds = self.head.predict_scores(logits[net], data_samples)
        if self.eval_all_nets:
            scores = torch.stack(
                [logits[n].float().softmax(dim=1) for n in nets], dim=1)
            for sample, score in zip(preds, scores):
                sample.set_field(score.detach(), 'net_scores')
                sample.set_metainfo(dict(net_names=tuple(nets)))
        return preds

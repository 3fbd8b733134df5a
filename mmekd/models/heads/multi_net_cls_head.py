# Copyright (c) mmekd contributors. All rights reserved.
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.structures import DataSample

from mmekd.registry import MODELS
from mmekd.utils.numbers import config_number
from mmekd.vocabulary import (FULL_NET, PRIVATE_FCS, check_net_name,
                              per_net_key)


@MODELS.register_module()
class MultiNetClsHead(LinearClsHead):
    """Linear classification head for a full net and its sub-nets.

    The full net's classifier is ``fc`` (MMPretrain's name, so plain
    classifier weights load). With ``private_fc=True`` every sub-net gets its
    own classifier in ``sub_fcs``; otherwise all nets share ``fc``.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Input feature channels.
        net_names (Sequence[str]): Nets, ``'full'`` first. The
            :class:`DDNNClassifier` fills it in from its backbone.
        private_fc (bool): A classifier per net. A checkpoint without the
            sub-nets' classifiers (a plain classifier) starts them from
            ``fc``. Defaults to False.
        **kwargs: Other arguments of :class:`LinearClsHead` (``loss``,
            ``topk``, ``cal_acc``, ``init_cfg``).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 net_names: Sequence[str] = (FULL_NET, ),
                 private_fc: bool = False,
                 **kwargs):
        super().__init__(num_classes, in_channels, **kwargs)
        net_names = list(net_names)
        if not net_names or net_names[0] != FULL_NET:
            raise ValueError(f"net_names must start with {FULL_NET!r}, got "
                             f'{net_names}')
        self.net_names = net_names
        self.private_fc = private_fc
        if hasattr(self.loss_module, 'loss_weight'):
            config_number(self.loss_module.loss_weight,
                          f'head.loss.loss_weight '
                          f'({type(self.loss_module).__name__})')
        self._labels_checked = False
        if private_fc:
            # ``sub_fcs`` is the vocabulary's PRIVATE_FCS (state keys).
            self.sub_fcs = nn.ModuleDict({
                name: nn.Linear(in_channels, num_classes)
                for name in net_names[1:]
            })

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A plain classifier checkpoint (or one with a shared ``fc``) has no
        # private classifiers: start them from ``fc`` instead of reporting
        # them missing, as PrivateBatchNorm2d does for the norms.
        if self.private_fc:
            for name in self.sub_fcs:
                sub_prefix = prefix + per_net_key(PRIVATE_FCS, name, '')
                if any(k.startswith(sub_prefix) for k in state_dict):
                    continue
                for key in ('weight', 'bias'):
                    if f'{prefix}fc.{key}' in state_dict:
                        state_dict[sub_prefix + key] = state_dict[
                            f'{prefix}fc.{key}']
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def classifier(self, net: str) -> nn.Linear:
        """The linear layer that classifies for ``net``."""
        check_net_name(net, self.net_names)
        if self.private_fc and net != FULL_NET:
            return self.sub_fcs[net]
        return self.fc

    def state_key(self, net: str, name: str) -> str:
        """The key (relative to the head) of ``net``'s classifier tensor
        ``name`` (``'weight'`` or ``'bias'``)."""
        if self.private_fc and net != FULL_NET:
            return per_net_key(PRIVATE_FCS,
                               check_net_name(net, self.net_names), name)
        return f'fc.{name}'

    def forward(self,
                feats: Tuple[torch.Tensor],
                net: str = FULL_NET) -> torch.Tensor:
        """Class scores of ``net`` from its (pooled) features."""
        x = self.pre_logits(feats)
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'head.in_channels={self.in_channels}, but the features of '
                f'net {net!r} (backbone + neck output) have shape '
                f'{tuple(x.shape)}: set model.head.in_channels='
                f'{x.shape[1] if x.dim() == 2 else "<channels>"}' + (
                    '' if x.dim() == 2 else ' and pool the features (e.g. '
                    "neck=dict(type='GlobalAveragePooling'))"))
        return self.classifier(net)(x)

    def _check_labels(self, data_samples: List[DataSample]) -> None:
        """Once, at the first batch: every label is a class index of this
        head (one read of two numbers; later batches are not checked)."""
        labels = [s.gt_label for s in data_samples if 'gt_label' in s]
        if not labels:
            return
        labels = torch.cat([torch.as_tensor(x).reshape(-1) for x in labels])
        lo, hi = (int(v) for v in torch.stack([labels.min(), labels.max()]))
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(
                f'the batch has label {hi if hi >= self.num_classes else lo}'
                f', but head.num_classes={self.num_classes} (labels must be '
                f'0..{self.num_classes - 1}): set model.head.num_classes to '
                "the dataset's number of classes")
        self._labels_checked = True

    def targets(self, data_samples: List[DataSample]) -> torch.Tensor:
        """The loss targets of a batch, as :meth:`ClsHead._get_loss` makes
        them: the stacked ``gt_score`` (batch augments such as Mixup) or the
        concatenated ``gt_label``. Labels are checked once, at the first
        batch."""
        if not self._labels_checked:
            self._check_labels(data_samples)
        if 'gt_score' in data_samples[0]:
            return torch.stack([s.gt_score for s in data_samples])
        return torch.cat([s.gt_label for s in data_samples])

    def loss_by_target(self, cls_score: torch.Tensor,
                       target: torch.Tensor) -> torch.Tensor:
        """The classification loss (``loss`` config) of one net's scores
        against :meth:`targets`: tensors only, so a compiled step traces it
        without the data samples."""
        return self.loss_module(
            cls_score, target, avg_factor=cls_score.size(0))

    def loss_by_net(self, cls_score: torch.Tensor,
                    data_samples: List[DataSample]) -> torch.Tensor:
        """The classification loss (``loss`` config) of one net's scores."""
        return self.loss_by_target(cls_score, self.targets(data_samples))

    def predict_scores(
            self,
            cls_score: torch.Tensor,
            data_samples: Optional[List[Optional[DataSample]]] = None
    ) -> List[DataSample]:
        """Turn one net's scores into predictions (softmax, argmax)."""
        return self._get_predictions(cls_score, data_samples)

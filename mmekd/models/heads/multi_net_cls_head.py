# Copyright (c) mmekd contributors. All rights reserved.
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.structures import DataSample

from mmekd.registry import MODELS
from ..utils import FULL_NET


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
        if private_fc:
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
                sub_prefix = f'{prefix}sub_fcs.{name}.'
                if any(k.startswith(sub_prefix) for k in state_dict):
                    continue
                for key in ('weight', 'bias'):
                    if f'{prefix}fc.{key}' in state_dict:
                        state_dict[sub_prefix + key] = state_dict[
                            f'{prefix}fc.{key}']
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def classifier(self, net: str) -> nn.Linear:
        """The linear layer that classifies for ``net``."""
        if net not in self.net_names:
            raise KeyError(f'unknown net {net!r}; this head has '
                           f'{self.net_names}')
        if self.private_fc and net != FULL_NET:
            return self.sub_fcs[net]
        return self.fc

    def forward(self,
                feats: Tuple[torch.Tensor],
                net: str = FULL_NET) -> torch.Tensor:
        """Class scores of ``net`` from its (pooled) features."""
        return self.classifier(net)(self.pre_logits(feats))

    def loss_by_net(self, cls_score: torch.Tensor,
                    data_samples: List[DataSample]) -> torch.Tensor:
        """The classification loss (``loss`` config) of one net's scores."""
        return self._get_loss(cls_score, data_samples)['loss']

    def predict_scores(
            self,
            cls_score: torch.Tensor,
            data_samples: Optional[List[Optional[DataSample]]] = None
    ) -> List[DataSample]:
        """Turn one net's scores into predictions (softmax, argmax)."""
        return self._get_predictions(cls_score, data_samples)

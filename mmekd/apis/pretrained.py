# Copyright (c) mmekd contributors. All rights reserved.
"""Start a DDNN from torchvision (ImageNet) ResNet weights.

torchvision and MMPretrain name the ResNet backbone's tensors the same way
(``conv1.weight``, ``layer1.0.bn1.running_mean`` ...); torchvision's
classifier is ``fc``, MMPretrain's ``head.fc``. The converted checkpoint
holds every tensor of the DDNN model: the full net's from torchvision, and
each sub-net's BatchNorm statistics (``private_norm='stats'``), BatchNorm
copies (``private_norm=True``) and classifier (``private_fc=True``)
initialised from the full net's pretrained ones.
"""
from collections import OrderedDict
from typing import Dict, Tuple

import torch
import torch.nn as nn

# Tensors a sub-net keeps of its own, filled from the full net's on loading.
_PER_NET = ('.sub_stats.', '.sub_norms.', '.sub_fcs.')


def torchvision_to_mmpretrain(state_dict: Dict[str, torch.Tensor],
                              head: bool = True
                              ) -> 'OrderedDict[str, torch.Tensor]':
    """Rename a torchvision ResNet state dict to an MMPretrain classifier's.

    Args:
        state_dict (dict): ``torchvision.models.resnet*().state_dict()``.
        head (bool): Keep the classifier (``fc.*`` -> ``head.fc.*``). False
            drops it (fine-tuning on other classes). Defaults to True.

    Returns:
        OrderedDict: ``backbone.*`` (and ``head.fc.*``) tensors.
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('fc.'):
            if head:
                out['head.' + key] = value
        else:
            out['backbone.' + key] = value
    return out


def load_torchvision_weights(model: nn.Module,
                             state_dict: Dict[str, torch.Tensor],
                             head: bool = True) -> Tuple[str, ...]:
    """Load torchvision ResNet weights into a DDNN classifier, in place.

    Every tensor of the full net must come from ``state_dict`` (with
    ``head=False``, every one but the classifier's); the sub-nets' own
    BatchNorm statistics / copies and classifiers start from the full net's.

    Args:
        model (nn.Module): A :class:`mmekd.DDNNClassifier` whose backbone
            has the torchvision model's depth.
        state_dict (dict): The torchvision state dict.
        head (bool): Load ``fc.*`` into the head; False keeps the model's
            initial classifier (other classes). Defaults to True.

    Returns:
        tuple[str, ...]: The model's keys that were not loaded (the
        classifier's with ``head=False``, else empty).

    Raises:
        ValueError: The weights do not fit the model: names the missing,
            unexpected and mismatched tensors.
    """
    mapped = torchvision_to_mmpretrain(state_dict, head)
    own = model.state_dict()
    full_net = [k for k in own if not any(p in k for p in _PER_NET)]
    kept = tuple(k for k in full_net if not head and k.startswith('head.'))
    missing = [k for k in full_net if k not in mapped and k not in kept]
    unexpected = [k for k in mapped if k not in own]
    mismatched = [
        f'{k} {tuple(v.shape)} vs {tuple(own[k].shape)}'
        for k, v in mapped.items() if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f'{title} ({len(keys)}): {", ".join(keys[:8])}'
                 + (' ...' if len(keys) > 8 else '')
                 for title, keys in (('missing', missing),
                                     ('unexpected', unexpected),
                                     ('shape mismatches', mismatched))
                 if keys]
        hint = ''
        if any(k.startswith('head.') for k in mismatched):
            hint = ('\n  The classifier has another number of classes: '
                    'drop it (head=False, --no-head) to train a new one.')
        raise ValueError('the torchvision weights do not fit this model '
                         '(same depth and block type needed):\n  '
                         + '\n  '.join(lines) + hint)
    mapped.update((k, own[k]) for k in kept)
    model.load_state_dict(mapped, strict=True)
    return kept

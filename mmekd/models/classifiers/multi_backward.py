# Copyright (c) mmekd contributors. All rights reserved.
"""What a training step that back-propagates several times per iteration
needs of its optim wrapper, beyond MMEngine's verbs.

:class:`mmekd.DDNNClassifier`'s memory-efficient step back-propagates each
net's losses as soon as they are known, several ``optim_wrapper.backward``
calls in one iteration. MMEngine's ``OptimWrapper`` counts every call as an
iteration (gradient accumulation and its loss scaling would go wrong), and
checks nothing. An optim wrapper of this protocol (``mmekd.SafeOptimWrapper``
and ``mmekd.SafeAmpOptimWrapper``) counts the ``backward`` calls made inside
one ``optim_context`` as one iteration, and decides after the last of them
whether the gradients may be used.
"""
from typing import Dict, Protocol, runtime_checkable

import torch


@runtime_checkable
class MultiBackwardOptimWrapper(Protocol):
    """See the module docstring."""

    def check_backpropagated(self, loss: torch.Tensor,
                             loss_terms: Dict[str, torch.Tensor]) -> bool:
        """Called once per iteration after its ``backward`` calls, before
        ``should_update``/``step``.

        Returns:
            bool: Whether the step may use the gradients. False: the
            iteration is skipped (its gradients were discarded); raises to
            stop training.
        """

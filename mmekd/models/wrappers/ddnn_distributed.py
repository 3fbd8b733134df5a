# Copyright (c) mmekd contributors. All rights reserved.
"""Data-parallel training with the DDNN's memory-efficient step."""
from typing import Dict, Union

import torch
from mmengine.dist import all_reduce_dict, all_reduce_params
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper

from mmekd.models.backbones.per_net_norm import converted_copies
from mmekd.registry import MODEL_WRAPPERS


def check_no_converted_private_norms(module: torch.nn.Module) -> None:
    """Raise ``ValueError`` if a per-net BatchNorm of a DDNN backbone was
    replaced by another norm class (e.g. by ``sync_bn``'s conversion, which
    keeps the per-net copies as unused children)."""
    for name, m in module.named_modules():
        copies = converted_copies(m)
        if copies:
            raise ValueError(
                f'{name} is a {type(m).__name__} holding per-net BatchNorm '
                f'copies ({copies[0]}): sync_bn converted the DDNN '
                "backbone's per-net BatchNorm, which would share it between "
                'nets. Remove sync_bn, or set '
                'model.backbone.private_norm=False to use it.')


@MODEL_WRAPPERS.register_module()
class DDNNDistributedDataParallel(MMDistributedDataParallel):
    """:class:`MMDistributedDataParallel` that keeps the memory-efficient
    step of :class:`mmekd.DDNNClassifier` under DDP.

    MMEngine's DDP ``train_step`` runs one forward of all nets and one
    backward, so every net's activations are alive at once. Here, when the
    wrapped model's ``train_step_mode`` is ``'memory_efficient'``:

    1. ``module.backward_step`` runs the per-net forwards and backwards
       outside DDP's forward, so the DDP reducer stays idle and gradients
       accumulate locally, exactly as on one process;
    2. the loss terms are averaged over processes (so a non-finite loss on
       one process stops or skips the step on all of them, without a hang)
       and checked as ``SafeOptimWrapper`` does;
    3. when the optimizer wrapper updates, all gradients are averaged with
       one all-reduce per dtype (flattened), then it steps.

    Other models and ``train_step_mode='simple'`` use MMEngine's step.
    BatchNorm statistics are per process (``broadcast_buffers=False``, as
    MMEngine's default wrapper); every process must produce gradients for
    the same parameters (a DDNN always does).

    ``sync_bn`` (MMEngine converts every BatchNorm before wrapping) would
    replace the backbone's per-net BatchNorm (``private_norm='stats'`` or
    ``True``) by one shared SyncBatchNorm and silently drop the nets' own
    statistics or weights: that is refused with a clear error.
    """

    def __init__(self, module: torch.nn.Module, **kwargs):
        check_no_converted_private_norms(module)
        super().__init__(module=module, **kwargs)

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        module = self.module
        if getattr(module, 'train_step_mode', None) != 'memory_efficient':
            return super().train_step(data, optim_wrapper)
        log_vars = self._average(module.backward_step(data, optim_wrapper))
        module.optimizer_step(
            log_vars, optim_wrapper, before_update=self._average_gradients)
        return log_vars

    @staticmethod
    def _average(log_vars: Dict[str, torch.Tensor]
                 ) -> Dict[str, torch.Tensor]:
        """The loss terms averaged over processes (one all-reduce)."""
        values = {k: v.detach().float() for k, v in log_vars.items()}
        all_reduce_dict(values, op='mean')
        return values

    def _average_gradients(self) -> None:
        """Average every parameter's gradient over processes (coalesced:
        one all-reduce per dtype)."""
        all_reduce_params(
            [p.grad for p in self.module.parameters() if p.grad is not None],
            op='mean')

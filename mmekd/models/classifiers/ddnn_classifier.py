# Copyright (c) mmekd contributors. All rights reserved.
"""DDNN with Embedded Knowledge Distillation (EKD): the classifier that trains
a full net and all its sub-nets on the same batch."""
import copy
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.structures import DataSample

from mmekd.registry import MODELS
from mmekd.utils.onednn_fence import refuse_channels_last
from mmekd.vocabulary import FULL_NET, check_net_name, is_ddnn
from ..losses.ekd_loss import EKDLoss
from .compiled_step import StepCompiler, parse_compile_step
from .memory_efficient_step import (MemoryEfficientStep, build_plan,
                                    simple_losses)
from .multi_backward import MultiBackwardOptimWrapper
from .net_sampler import NetSampler


@MODELS.register_module()
class DDNNClassifier(ImageClassifier):
    """Depth-level dynamic classifier trained with EKD.

    One training iteration runs the full net (teacher) and every sub-net
    (students) of a depth-dynamic backbone on the same batch. The loss terms
    (:attr:`ekd`, an :class:`mmekd.models.losses.EKDLoss`) are, for every
    net ``n`` and every sub-net ``s``, ``loss_ce_<n>`` (the head's loss),
    ``loss_kl_<s>`` (logit distillation from the full net) and
    ``loss_at_<s>`` (attention distillation), logged separately and summed
    by MMEngine; ``kl_loss=None`` and ``at_loss=None`` give DDNN without
    EKD. The nets of a step are drawn by :attr:`sampler`
    (:class:`~.net_sampler.NetSampler`, ``train_nets``). The levers
    ``sub_ce_weight``, ``full_loss_weight``, ``train_nets`` and ``kl_topk``
    are documented in ``docs/levers.md``.

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
            loss_weight=10)``. ``None`` disables it. (Why 10 and not the
            attention-transfer paper's 1000: ``docs/results.md``.)
        at_stages (Sequence[int]): Stages (0-based) whose spatial maps are
            matched by attention distillation. Defaults to the backbone's
            ``distill_stages`` (ResNet: its ``out_indices``; ConvNeXt, Swin:
            the four stages; ViT: its one stage).
        predict_net (str): Net used by ``predict`` and ``tensor`` mode.
            Defaults to ``'full'``.
        eval_all_nets (bool): ``predict`` also scores every other net.
            Defaults to True.
        train_step_mode (str): How :meth:`train_step` back-propagates.
            ``'memory_efficient'`` (default) runs the teacher first and
            back-propagates each net's losses as soon as they are known, so
            only one net's private activations are alive at a time; the
            blocks shared by several nets are cut off at their outputs and
            back-propagated once, after all their users. Same losses and
            gradients as ``'simple'`` (sum of all losses, one backward), which
            is MMEngine's default step. Under DDP the stock wrapper calls the
            model's forward, i.e. the simple step; use
            :class:`mmekd.DDNNDistributedDataParallel` for this one.
        channels_last (bool): Keep the convolution weights and the input
            batch in ``torch.channels_last`` memory format (faster
            convolutions on tensor-core GPUs with AMP). Defaults to False.
        sub_ce_weight (float): Weight (>= 0) of every sub-net's label loss
            ``loss_ce_<sub>``; 0 drops the term (the sub-nets learn from
            distillation only, which then must be on). Defaults to 1.0.
        full_loss_weight (float): Weight (> 0) of the full net's label loss
            ``loss_ce_full``. Defaults to 1.0.
        train_nets (str): Nets trained in a step. ``'all'`` (default): every
            net. ``'sandwich'``: the full net and the smallest sub-net (fewest
            blocks). ``'sandwich_random'``: those two plus one of the other
            sub-nets, drawn from the runner's seed and iteration (the
            ``'seed'`` and ``'iter'`` of MMEngine's message hub), so a resumed
            run draws the same nets; outside a runner, from seed 0 and a count
            of this model's training steps. Evaluation always runs all nets.
        kl_topk (int, optional): Compute ``kl_loss`` on the teacher's ``k``
            highest-scoring classes of each sample only (both nets' logits
            gathered there, softmax over those ``k``). Defaults to None (all
            classes).
        compile_step (bool | dict, optional): ``torch.compile`` the training
            step's functions of tensors (:mod:`.compiled_step`): the simple
            step's forward + losses as one graph, the memory-efficient step
            as one graph per segment of the net tree. True, or a dict of
            ``backend`` (default ``'inductor'``), ``mode`` and ``options``
            of ``torch.compile``. Every graph is compiled
            with ``fullgraph=True`` and ``dynamic=False`` (keep
            ``drop_last=True``). Do not also set MMEngine's ``compile``,
            which compiles the whole ``train_step`` with graph breaks.
            Defaults to None (eager).
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
                     loss_weight=10.0),
                 at_stages: Optional[Sequence[int]] = None,
                 predict_net: str = FULL_NET,
                 eval_all_nets: bool = True,
                 train_step_mode: str = 'memory_efficient',
                 channels_last: bool = False,
                 sub_ce_weight: float = 1.0,
                 full_loss_weight: float = 1.0,
                 train_nets: str = 'all',
                 kl_topk: Optional[int] = None,
                 compile_step: Union[bool, dict, None] = None,
                 **kwargs):
        if not isinstance(backbone, nn.Module):
            backbone = MODELS.build(backbone)
        if not is_ddnn(backbone):
            raise TypeError(
                'DDNNClassifier needs a depth-dynamic backbone with '
                f'forward_nets() (e.g. mmekd.DepthDynamicResNet), got '
                f'{type(backbone).__name__}')
        super().__init__(
            backbone=backbone, neck=neck, head=self._build_head(
                head, backbone.net_names), **kwargs)
        out_indices = sorted(self.backbone.out_indices)
        last = self.backbone.num_stages - 1
        if last not in out_indices:
            raise ValueError(
                f'backbone.out_indices {tuple(out_indices)} must contain the '
                f'last stage ({last}): the head classifies its output')
        subs = self.backbone.sub_net_names
        if at_stages is None:
            at_stages = self.backbone.distill_stages
        at_stages = tuple(at_stages)
        bad = [s for s in at_stages
               if not isinstance(s, int) or not 0 <= s <= last]
        if bad:
            raise ValueError(
                f'at_stages {at_stages}: {bad} are not stages of the '
                f'backbone (0..{last})')
        # The stages whose outputs every net's forward keeps: the backbone's
        # (the last one is classified) and the distilled ones.
        self.feature_stages = tuple(
            sorted({*out_indices, *(at_stages if at_loss else ())}))
        self.ekd = EKDLoss(
            MODELS.build(kl_loss) if kl_loss else None,
            MODELS.build(at_loss) if at_loss else None,
            stages=self.feature_stages,
            at_stages=at_stages,
            sub_ce_weight=sub_ce_weight,
            full_loss_weight=full_loss_weight,
            kl_topk=kl_topk,
            num_classes=self.head.num_classes,
            has_sub_nets=bool(subs))
        if predict_net not in self.backbone.net_names:
            raise ValueError(f'predict_net must be one of '
                             f'{self.backbone.net_names}, got {predict_net!r}')
        self.predict_net = predict_net
        self.eval_all_nets = eval_all_nets
        if train_step_mode not in self.TRAIN_STEP_MODES:
            raise ValueError(f'train_step_mode must be one of '
                             f'{self.TRAIN_STEP_MODES}, got '
                             f'{train_step_mode!r}')
        self.train_step_mode = train_step_mode
        if not isinstance(channels_last, bool):
            raise TypeError(f'channels_last must be a bool, got '
                            f'{channels_last!r}')
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.sampler = NetSampler(
            train_nets, self.backbone.net_names,
            {n: sum(self.backbone.blocks_per_stage(n)) for n in subs})
        self.compile_step = parse_compile_step(compile_step)
        self._compiler = (StepCompiler(self.compile_step)
                          if self.compile_step else None)
        self._plans = {}  # trained nets -> memory-efficient step's segments
        self._fenced_on = None  # the device the oneDNN fence last passed

    TRAIN_STEP_MODES = ('memory_efficient', 'simple')

    @staticmethod
    def _build_head(head, net_names: List[str]) -> nn.Module:
        """The head, built for ``net_names`` (a per-net head is checked
        before it is built: another head fails on ``net_names``)."""

        def check_head(head_cls: type) -> None:
            if not hasattr(head_cls, 'classifier'):
                raise TypeError('DDNNClassifier needs a head that classifies '
                                'per net (e.g. mmekd.MultiNetClsHead), got '
                                f'{head_cls.__name__}')

        if head is None:
            raise ValueError('DDNNClassifier needs a head config')
        if isinstance(head, nn.Module):
            check_head(type(head))
            return head
        head = copy.deepcopy(head)
        head_cls = head.get('type')
        if isinstance(head_cls, str):
            head_cls = MODELS.get(head_cls)
        if isinstance(head_cls, type):
            check_head(head_cls)
        given = head.get('net_names')
        if given is not None and list(given) != net_names:
            raise ValueError(
                f'head.net_names {list(given)} do not match the '
                f"backbone's nets {net_names}")
        head['net_names'] = net_names
        head = MODELS.build(head)
        check_head(type(head))
        return head

    def nets_to_train(self) -> List[str]:
        """The nets one training step runs (``train_nets``, drawn by
        :attr:`sampler`), in ``net_names`` order."""
        return self.sampler.draw()

    def init_weights(self):
        super().init_weights()
        if self.channels_last:
            # Initialisers may assign new (contiguous) tensors.
            self.to(memory_format=torch.channels_last)

    def _format_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    @property
    def net_names(self) -> List[str]:
        return self.backbone.net_names

    # ------------------------------------------------------------------ #
    # features and scores (net names are checked by the backbone's
    # forward_nets, the public door of every forward)
    # ------------------------------------------------------------------ #
    def net_logits(self, feats: Sequence[torch.Tensor],
                   net: str) -> torch.Tensor:
        """Logits of ``net`` from its raw stage outputs (the last one, in
        the stock backbone's output format, through the neck, to the net's
        classifier)."""
        x = (self.backbone.stage_output(self.feature_stages[-1], feats[-1]), )
        return self.head(self.neck(x) if self.with_neck else x, net=net)

    def stage_maps(self, feats: Sequence[torch.Tensor]
                   ) -> Tuple[torch.Tensor, ...]:
        """The spatial maps ``(N, C, H, W)`` of raw stage outputs (of
        :attr:`feature_stages`), for attention distillation."""
        return tuple(
            self.backbone.stage_map(s, f)
            for s, f in zip(self.feature_stages, feats))

    def forward_nets(
        self,
        inputs: torch.Tensor,
        nets: Optional[Sequence[str]] = None
    ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Tuple[torch.Tensor]]]:
        """Logits and raw stage outputs of several nets on one batch.

        Returns:
            tuple[dict, dict]: ``{net: logits (N, C)}`` and ``{net: raw
            outputs of the stages in feature_stages}`` (ResNet: the stage
            outputs themselves).
        """
        nets = list(nets or self.net_names)
        feats = dict(zip(nets, self.backbone.forward_net_stages(
            inputs, nets, self.feature_stages)))
        logits = {net: self.net_logits(feats[net], net) for net in nets}
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
        x = self.backbone.forward_nets(inputs, [net or self.predict_net])[0]
        if stage == 'backbone':
            return x
        x = (x[-1], )
        x = self.neck(x) if self.with_neck else x
        return x if stage == 'neck' else self.head.pre_logits(x)

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        inputs = self._format_inputs(inputs)
        if mode == 'tensor':
            net = self.predict_net
            return self.forward_nets(inputs, [net])[0][net]
        return super().forward(inputs, data_samples, mode)

    # ------------------------------------------------------------------ #
    # training
    # ------------------------------------------------------------------ #
    def loss(self, inputs: torch.Tensor,
             data_samples: List[DataSample]) -> Dict[str, torch.Tensor]:
        """CE for every trained net (``train_nets``) plus EKD terms for every
        trained sub-net (one graph with ``compile_step``)."""
        nets = tuple(self.nets_to_train())
        self._check_compiled_input(inputs)
        fn = self._step_functions('simple', nets, simple_losses)
        return fn(self, inputs, self.head.targets(data_samples), nets)

    def compute_losses(self, logits: Dict[str, torch.Tensor],
                       feats: Dict[str, Tuple[torch.Tensor]],
                       targets: Union[torch.Tensor, List[DataSample]]
                       ) -> Dict[str, torch.Tensor]:
        """The loss terms (:attr:`ekd`) for the nets present in ``logits``.

        ``targets`` are the batch's data samples or the tensor
        ``head.targets(data_samples)`` makes of them. With distillation, the
        teacher (full net) must be among the nets when a sub-net is.
        """
        if not torch.is_tensor(targets):
            targets = self.head.targets(targets)
        maps = {net: self.stage_maps(f) for net, f in feats.items()}
        return self.ekd.terms(logits, maps, targets,
                              self.head.loss_by_target)

    # ------------------------------------------------------------------ #
    # training step
    # ------------------------------------------------------------------ #
    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        """One optimisation step of the nets ``train_nets`` selects (see
        ``train_step_mode``).

        Same contract as :meth:`mmengine.model.BaseModel.train_step`: the
        forward runs in ``optim_wrapper.optim_context`` (AMP, ``no_sync``
        during gradient accumulation), every backward goes through
        ``optim_wrapper.backward`` (loss scaling) after
        ``optim_wrapper.scale_loss`` (gradient accumulation), the step counts
        as one iteration of ``accumulative_counts``, and the returned
        ``log_vars`` are :meth:`parse_losses` of all loss terms. The
        memory-efficient step needs a
        :class:`~.multi_backward.MultiBackwardOptimWrapper`
        (``mmekd.SafeOptimWrapper`` / ``SafeAmpOptimWrapper``).
        """
        self._fence_channels_last(torch.compiler.is_compiling())
        if self.train_step_mode == 'simple':
            return super().train_step(data, optim_wrapper)
        log_vars = self.backward_step(data, optim_wrapper)
        self.optimizer_step(log_vars, optim_wrapper)
        return log_vars

    @staticmethod
    def optimizer_step(log_vars: Dict[str, torch.Tensor],
                       optim_wrapper: MultiBackwardOptimWrapper,
                       before_update: Optional[Callable[[], None]] = None
                       ) -> None:
        """The end of the memory-efficient step, after
        :meth:`backward_step`: the wrapper checks the iteration
        (``check_backpropagated``: a non-finite loss stops training or
        skips the step), then, when it updates (see
        ``accumulative_counts``), ``before_update()`` (a DDP wrapper
        averages gradients there), step and zero the gradients."""
        if not optim_wrapper.check_backpropagated(log_vars['loss'],
                                                  log_vars):
            return
        if optim_wrapper.should_update():
            if before_update is not None:
                before_update()
            optim_wrapper.step()
            optim_wrapper.zero_grad()

    def backward_step(self, data: Union[dict, tuple, list],
                      optim_wrapper: MultiBackwardOptimWrapper
                      ) -> Dict[str, torch.Tensor]:
        """Forward and backward of the memory-efficient step, without the
        optimizer step (a DDP wrapper syncs gradients in between): every
        net's losses go through ``optim_wrapper.backward`` inside one
        ``optim_context``, which the wrapper counts as one iteration.

        Returns:
            dict[str, Tensor]: ``log_vars`` as :meth:`parse_losses` makes
            them from all loss terms.
        """
        if not isinstance(optim_wrapper, MultiBackwardOptimWrapper):
            raise TypeError(
                "train_step_mode='memory_efficient' back-propagates once per "
                f'net in an iteration; {type(optim_wrapper).__name__} counts '
                'every backward as an iteration. Use optim_wrapper.type='
                "'mmekd.SafeOptimWrapper' (or 'mmekd.SafeAmpOptimWrapper' "
                "for AMP), or train_step_mode='simple'")

        def backward(loss: torch.Tensor) -> None:
            # Outside autocast, as MMEngine's own step back-propagates.
            with torch.autocast(loss.device.type, enabled=False):
                optim_wrapper.backward(optim_wrapper.scale_loss(loss))

        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
            if not isinstance(data, dict):
                raise TypeError('the memory-efficient train_step needs the '
                                'data preprocessor to return a dict, got '
                                f'{type(data).__name__}')
            losses = self._backward_nets(data['inputs'],
                                         data['data_samples'], backward)
        _, log_vars = self.parse_losses(
            OrderedDict((k, v.detach()) for k, v in losses.items()))
        return log_vars

    def _backward_nets(self, inputs: torch.Tensor,
                       data_samples: List[DataSample],
                       backward: Callable[[torch.Tensor], None]
                       ) -> Dict[str, torch.Tensor]:
        """Run the segments of the net tree (:func:`build_plan`, from the
        traversal of ``forward_nets``), back-propagating every net's losses
        as soon as they are known.

        A block output used by several nets is detached into a leaf when the
        nets part there (or one ends there, or takes it as a distilled
        feature); the segment that made it is back-propagated once, with the
        gradient its users accumulated in the leaf, when the tree below it is
        done. No graph is traversed twice, no ``retain_graph`` is needed.

        Returns:
            dict[str, Tensor]: All loss terms (teacher first).
        """
        nets = tuple(self.nets_to_train())
        plan = self._plans.get(nets)
        if plan is None:
            plan = self._plans[nets] = build_plan(self, list(nets))
        self._check_compiled_input(inputs)
        step = MemoryEfficientStep(self, plan, self._step_functions,
                                   self.head.targets(data_samples), backward)
        return step.run(self._format_inputs(inputs))

    def _check_compiled_input(self, inputs: torch.Tensor) -> None:
        if self._compiler is not None and self.training:
            self._compiler.check_input(inputs, self)

    @torch.compiler.disable
    def _fence_channels_last(self, compiled_whole: bool) -> None:
        """Refuse training that would run channels-last convolutions into
        oneDNN's overflowing kernel (:mod:`mmekd.utils.onednn_fence`):
        ``channels_last=True``, or this step compiled as a whole
        (``compiled_whole``: MMEngine's ``compile``, whose layout mmekd
        does not control). ``compile_step`` is fenced by its compiler."""
        device = next(self.parameters()).device
        if device == self._fenced_on:
            return
        if self.channels_last:
            refuse_channels_last(self, device, 'channels_last=True')
        if compiled_whole:
            refuse_channels_last(self, device, "MMEngine's compile=True")
        self._fenced_on = device

    def _step_functions(self, kind: str, key, fn: Callable) -> Callable:
        """The step's functions of tensors: compiled (``compile_step``, in
        training mode) or as they are."""
        if self._compiler is None or not self.training:
            return fn
        return self._compiler(kind, key, fn)

    # ------------------------------------------------------------------ #
    # inference
    # ------------------------------------------------------------------ #
    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                net: Optional[str] = None) -> List[DataSample]:
        """Predictions of ``net`` (default ``predict_net``); with
        ``eval_all_nets`` every net is scored in the same pass."""
        net = check_net_name(net or self.predict_net, self.net_names)
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


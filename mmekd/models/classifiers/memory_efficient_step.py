# Copyright (c) mmekd contributors. All rights reserved.
"""The memory-efficient DDNN training step as a plan of segments.

The step (``DDNNClassifier(train_step_mode='memory_efficient')``) runs the
net tree (:meth:`DepthDynamicResNet.walk_nets`) and back-propagates every
net's losses as soon as they are known, so only one net's private
activations are alive at a time. A block output used by several nets is
detached into a leaf where the nets part there (or one ends there, or takes
it as a distilled feature); the part of the tree that made it is
back-propagated once, with the gradient its users accumulated in the leaf,
when the tree below it is done.

Those cuts split the tree into **segments**: chains of blocks between two
cuts, with no cut inside. :func:`build_plan` records them once per set of
trained nets, from the very traversal the forward uses (the net tree's
``walk``, run on placeholders), and :class:`MemoryEfficientStep` runs them.
Every segment is one function of tensors (:func:`segment_forward`): eagerly,
or compiled into one graph per segment (``DDNNClassifier(compile_step=...)``,
:mod:`.compiled_step`); the Python between segments (cuts, backward calls)
is the same either way.

A segment that ends one net's path and needs nothing that is not yet
computed also runs that net's head and losses (``Segment.finish``): with
the default nets (the teacher first in every branch) a step is one graph
per segment, no more.
"""
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch

from mmekd.vocabulary import FULL_NET


class Segment(NamedTuple):
    """A chain of blocks between two cuts of the memory-efficient step.

    Attributes:
        index (int): Position in :attr:`Plan.segments` (walk order).
        group (tuple[str]): The walk group (``backbone.walk_groups``) it
            belongs to; its context (private norms) holds for the segment.
        stem (bool): Starts at the input image (runs the stem first).
        blocks (tuple): ``(stage, block, net)`` to run, in order (``net``:
            whose running statistics the block uses).
        nets (tuple[str]): The nets that run it.
        features (tuple): ``(position, net, stage)``: the output of
            ``blocks[position]`` is ``net``'s output of ``stage``.
        cut (bool): Its output is detached into a leaf that the children
            share, and back-propagated once after them.
        ends (tuple[str]): Nets whose path ends with it.
        finish (str, optional): The one net of ``ends`` whose head and losses
            the segment also computes (it runs alone, and the teacher, if it
            needs it, is done); the other ends are finished on their own.
        children (tuple[int]): Segments that continue from its output.
    """
    index: int
    group: Tuple[str, ...]
    stem: bool
    blocks: Tuple[Tuple[int, int, str], ...]
    nets: Tuple[str, ...]
    features: Tuple[Tuple[int, str, int], ...]
    cut: bool
    ends: Tuple[str, ...]
    finish: Optional[str]
    children: Tuple[int, ...]


class Plan(NamedTuple):
    """The segments of one training step (:func:`build_plan`).

    Attributes:
        nets (tuple[str]): The trained nets.
        segments (tuple[Segment]): In walk order.
        roots (tuple[int]): The segments that start at the input image.
    """
    nets: Tuple[str, ...]
    segments: Tuple[Segment, ...]
    roots: Tuple[int, ...]


class _Token(NamedTuple):
    """What the planning walk passes where the real walk passes tensors:
    the segment a block output belongs to (None: a fresh start, i.e. the
    stem's output or a leaf)."""
    segment: Optional[int]
    parent: Optional[int]


def build_plan(model, nets: List[str]) -> Plan:
    """The segments of the memory-efficient step of ``model`` (a
    :class:`DDNNClassifier`) training ``nets``, from the net tree's own
    traversal (``NetTree.walk`` on placeholders, group by group as
    ``backbone.walk_nets`` runs it).

    The cut rule: a block output is cut into a leaf when several nets run
    the block and nets end there, part there (several next blocks), or take
    it as a feature of a stage that is read after the net ends (the last
    stage, pooled for the head; distilled stages).
    """
    backbone = model.backbone
    feat_stages = {backbone.num_stages - 1}
    if len(nets) > 1:
        feat_stages.update(model.ekd.distilled_stages)
    segs: List[dict] = []
    roots: List[int] = []

    for group in backbone.walk_groups(nets):

        def run_block(stage, block, x: _Token, net):
            if x.segment is None:  # a new segment starts here
                segs.append(
                    dict(group=tuple(group), stem=x.parent is None,
                         blocks=[], features=[], cut=False, ends=(),
                         nets=(), children=[]))
                index = len(segs) - 1
                if x.parent is None:
                    roots.append(index)
                else:
                    segs[x.parent]['children'].append(index)
            else:
                index = x.segment
            segs[index]['blocks'].append((stage, block, net))
            return _Token(index, None)

        def visit(node, y: _Token):
            seg = segs[y.segment]
            pos = len(seg['blocks']) - 1
            seg['features'] += [(pos, net, node.stage)
                                for net in node.features]
            seg['nets'] = tuple(node.nets)
            seg['ends'] = tuple(node.ends)
            cut = len(node.nets) > 1 and bool(
                node.ends or node.branches > 1
                or (node.features and node.stage in feat_stages))
            if cut or node.ends:  # the segment ends with this block
                seg['cut'] = cut
                return _Token(None, y.segment), None
            return y, None

        backbone.walk(_Token(None, None), group, run_block,
                      model.feature_stages, visit)

    # Which ends a segment can finish itself: a net running alone there,
    # and (a student that distills) only once the teacher is done, i.e.
    # after the teacher's segment in walk order.
    teacher_done = FULL_NET not in nets or not model.ekd.distills
    segments = []
    for index, seg in enumerate(segs):
        finish = None
        if len(seg['nets']) == 1 and seg['ends'] and not seg['cut']:
            net = seg['ends'][0]
            if net == FULL_NET or teacher_done:
                finish = net
        if finish == FULL_NET:
            teacher_done = True
        segments.append(
            Segment(index, seg['group'], seg['stem'], tuple(seg['blocks']),
                    seg['nets'], tuple(seg['features']), seg['cut'],
                    seg['ends'], finish, tuple(seg['children'])))
    return Plan(tuple(nets), tuple(segments), tuple(roots))


# ---------------------------------------------------------------------- #
# the functions of tensors (run eagerly or compiled)
# ---------------------------------------------------------------------- #
def segment_forward(model, seg: Segment, x: torch.Tensor,
                    feats: Dict[int, torch.Tensor], target: torch.Tensor,
                    teacher: Optional[Tuple[torch.Tensor, Tuple]]):
    """Run segment ``seg`` from ``x`` (the image if ``seg.stem``, else its
    parent's output).

    Returns:
        ``(y, {(net, stage): feature})`` for a segment that does not
        finish a net, else :func:`finish_forward` of ``seg.finish`` given
        ``feats`` (its features from the segments above, by stage) and the
        new ones.
    """
    backbone = model.backbone
    new = {}
    with backbone.group_context(seg.group):
        if seg.stem:
            x = backbone.forward_stem(x)
        for pos, (stage, block, net) in enumerate(seg.blocks):
            x = backbone.forward_block(stage, block, x, net)
            for at, net, feat_stage in seg.features:
                if at == pos:
                    new[(net, feat_stage)] = x
        if seg.finish is None:
            return x, new
        feats = dict(feats)
        feats.update({s: f for (n, s), f in new.items() if n == seg.finish})
        return finish_forward(model, seg.finish, feats, target, teacher)


def finish_forward(model, net: str, feats: Dict[int, torch.Tensor],
                   target: torch.Tensor,
                   teacher: Optional[Tuple[torch.Tensor, Tuple]]):
    """Head and losses of ``net`` from its stage outputs ``feats``
    (``{stage: tensor}``); ``teacher`` is the full net's detached
    ``(logits, feats)`` (None for the teacher itself).

    Returns:
        tuple: ``(losses, total, logits, maps)``: the loss terms, their
        sum (what is back-propagated) and the net's logits and stage maps
        (of ``model.feature_stages``, what the students distill).
    """
    feats = tuple(feats[s] for s in sorted(feats))
    logits = model.net_logits(feats, net)
    maps = model.stage_maps(feats)
    losses = model.ekd.net_terms(net, logits, maps, target,
                                 model.head.loss_by_target, teacher)
    return losses, sum(losses.values()), logits, maps


def simple_losses(model, inputs: torch.Tensor, target: torch.Tensor,
                  nets: Tuple[str, ...]) -> Dict[str, torch.Tensor]:
    """All loss terms of the simple step (every net's forward, then the
    losses): one function of tensors, one graph when compiled."""
    logits, feats = model.forward_nets(inputs, nets)
    return model.compute_losses(logits, feats, target)


# ---------------------------------------------------------------------- #
# the step
# ---------------------------------------------------------------------- #
class MemoryEfficientStep:
    """Run a :class:`Plan`: segments in walk order, each net's losses
    back-propagated as soon as they are known, a cut segment
    back-propagated once its children are done.

    Args:
        model (DDNNClassifier): The model.
        plan (Plan): Its segments for the trained nets.
        functions: ``functions(kind, key, fn)`` returns the function to call
            for ``fn`` (``segment_forward`` per segment, ``finish_forward``
            per net): ``fn`` itself (eager) or its compiled graph.
        target (Tensor): ``head.targets(data_samples)``.
        backward (callable): Back-propagates a loss (through the optim
            wrapper: loss scaling, accumulation).

    A fresh object per step; its activations are freed when it returns.
    """

    def __init__(self, model, plan: Plan, functions: Callable,
                 target: torch.Tensor,
                 backward: Callable[[torch.Tensor], None]):
        self.model, self.plan, self.functions = model, plan, functions
        self.target, self.backward = target, backward
        self.outs = {net: {} for net in plan.nets}
        self.teacher = None  # (logits, feats), detached
        self.pending: List[tuple] = []  # students ended before the teacher
        self.losses: Dict[str, torch.Tensor] = {}

    def run(self, inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        """All loss terms of the step (teacher first), back-propagated."""
        for root in self.plan.roots:
            self._run(self.plan.segments[root], inputs)
        return self.losses

    def _run(self, seg: Segment, x: torch.Tensor) -> None:
        fn = self.functions('segment', seg.index, segment_forward)
        if seg.finish is not None:
            feats = self.outs.pop(seg.finish)
            self._finished(seg.finish,
                           fn(self.model, seg, x, feats, self.target,
                              self._teacher_for(seg.finish)))
            return
        y, new = fn(self.model, seg, x, {}, self.target, None)
        cut = seg.cut and y.requires_grad
        out = y.detach().requires_grad_() if cut else y
        end = len(seg.blocks) - 1
        for pos, net, stage in seg.features:
            self.outs[net][stage] = out if pos == end else new[(net, stage)]
        for net in seg.ends:
            self._finish(net)
        for child in seg.children:
            self._run(self.plan.segments[child], out)
        if cut and out.grad is not None:
            # Every net below has back-propagated into ``out``.
            with torch.autocast(y.device.type, enabled=False):
                torch.autograd.backward(y, out.grad)
            out.grad = None

    def _teacher_for(self, net: str):
        return None if net == FULL_NET else self.teacher

    def _finish(self, net: str) -> None:
        """Finish a net that ended in a segment which could not finish it
        (several nets there, or the teacher not done yet)."""
        if net != FULL_NET and self.model.ekd.distills and \
                self.teacher is None:
            self.pending.append(net)
            return
        fn = self.functions('finish', net, finish_forward)
        self._finished(net, fn(self.model, net, self.outs.pop(net),
                               self.target, self._teacher_for(net)))

    def _finished(self, net: str, result) -> None:
        losses, total, logits, maps = result
        self.backward(total)
        self.losses.update(losses)
        if net == FULL_NET:
            self.teacher = (logits.detach(), tuple(f.detach() for f in maps))
            pending, self.pending = self.pending, []
            for student in pending:
                self._finish(student)


__all__ = [
    'Segment', 'Plan', 'build_plan', 'segment_forward', 'finish_forward',
    'simple_losses', 'MemoryEfficientStep'
]

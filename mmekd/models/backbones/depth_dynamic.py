# Copyright (c) mmekd contributors. All rights reserved.
"""One mechanism that makes a stage-built MMPretrain backbone depth-dynamic.

A family (ResNet, ConvNeXt, Swin, ViT) subclasses its stock MMPretrain class
and :class:`DepthDynamicMixin`, and describes once what is its own:

- ``forward_stem(x)``: everything before the first block;
- ``enter_stage(stage, x)``: what runs between stages, before block 0 of
  ``stage > 0`` (ConvNeXt's downsample layers, Swin's patch merging; none
  for ResNet, whose block 0 strides, and ViT, one stage);
- ``run_block(stage, block, x)``: one block;
- ``stage_output(stage, x)``: what the stock class returns for a stage in
  ``out_indices`` (its final norms, pooling, token formats);
- ``stage_map(stage, x)``: the stage's spatial map ``(N, C, H, W)`` before
  any pooling, for attention distillation;
- ``block_prefix(stage, block)``: the state-dict prefix of a block (export);
- the stock config of one net (:meth:`plain_backbone_cfg`).

Everything else lives here: the nets (:class:`NetTree`, the single owner of
which blocks each net runs), the one traversal (:meth:`walk_nets`, computing
the blocks several nets share once), per-net drop path rates, per-net
modules switched with :func:`use_net`, and the stock-format
:meth:`forward_nets`.

Between blocks a family passes one tensor (ResNet/ConvNeXt ``NCHW``, Swin
``NHWC`` tokens, ViT ``(N, 1 + L, C)`` tokens), so the memory-efficient step
can cut and back-propagate anywhere.
"""
import inspect
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmcv.cnn.bricks.drop import DropPath, drop_path

from mmekd.vocabulary import FULL_NET
from .net_tree import NetTree, SubNetSpec, TreeNode, Visit
from .per_net_norm import use_net

DROP_PATH_MODES = ('per_net', 'full_net')


class PerNetDropPath(nn.Module):
    """Stochastic depth with a rate per net (the one of :attr:`active_net`,
    set by :func:`use_net`); replaces a block's ``DropPath``.

    Args:
        rates (dict[str, float]): Drop probability per net.
    """

    def __init__(self, rates: Dict[str, float]):
        super().__init__()
        self.rates = dict(rates)
        self.active_net = FULL_NET

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rates[self.active_net], self.training)

    def extra_repr(self) -> str:
        return f'rates={self.rates}'


def check_shared_norms(norm_sharing: str, family: str) -> None:
    """LayerNorm families: the nets share every norm."""
    if norm_sharing != 'shared':
        raise ValueError(
            f"norm_sharing={norm_sharing!r}: {family}'s norms are LayerNorms, "
            'which keep no running statistics, so its nets share every norm '
            "(norm_sharing='shared'); 'stats' and 'private' are for "
            'BatchNorm (mmekd.DepthDynamicResNet)')


def stock_arch(settings: Dict[str, dict], arch: dict,
               prefer: str = '') -> Union[str, dict]:
    """The name in a stock class's arch table whose values equal ``arch``'s
    (on ``arch``'s keys), else ``arch``. Among aliases, a name starting
    with ``prefer``, then the longest, wins."""

    def norm(v):
        return tuple(v) if isinstance(v, (list, tuple)) else v

    names = [
        name for name, value in settings.items()
        if all(norm(value.get(k)) == norm(v) for k, v in arch.items())
    ]
    if not names:
        return dict(arch)
    return sorted(names, key=lambda n: (not n.startswith(prefer), -len(n),
                                        n))[0]


def stock_rates(drop_path_rate: float, num_blocks: int,
                linspace: str) -> List[float]:
    """The per-block drop path rates a stock model with ``num_blocks``
    blocks computes: ``torch`` (ConvNeXt, Swin, ResNet) or ``numpy`` (ViT)
    ``linspace(0, drop_path_rate, num_blocks)``."""
    if linspace == 'numpy':
        return [float(r) for r in np.linspace(0, drop_path_rate, num_blocks)]
    return [
        r.item() for r in torch.linspace(0, drop_path_rate, num_blocks)
    ]


class DepthDynamicMixin:
    """The depth-dynamic part of a backbone (see the module docstring).

    Attributes:
        tree (NetTree): The nets and their blocks.
        net_blocks (OrderedDict): ``{net: block indices per stage}``.
    """

    #: Attention distillation's default stages; None: ``out_indices``.
    default_distill_stages: Optional[Tuple[int, ...]] = None
    #: Which linspace the stock class spreads drop path rates with.
    drop_path_linspace = 'torch'

    def init_nets(self,
                  stage_blocks: Sequence[int],
                  sub_stage_blocks: Sequence[SubNetSpec],
                  block_choice: str,
                  field: str = 'sub_stage_blocks',
                  arch: str = '',
                  drop_path_rate: float = 0.0,
                  drop_path: str = 'full_net') -> None:
        """Build the nets (after the stock class built the full net).

        Args:
            drop_path (str): ``'per_net'``: every net gets the per-block drop
                path rates a stock model of its own depth gets from
                ``drop_path_rate`` (nets whose rates differ at a block run it
                separately in training); ``'full_net'``: every net uses the
                full net's rate of each block (blocks shared as in eval).
        """
        if drop_path not in DROP_PATH_MODES:
            raise ValueError(f'drop_path must be one of {DROP_PATH_MODES}, '
                             f'got {drop_path!r}')
        self.block_choice = block_choice
        self.drop_path_mode = drop_path
        self.tree = NetTree(stage_blocks, sub_stage_blocks, block_choice,
                            field=field, arch=arch)
        self.net_blocks = self.tree.net_blocks
        # (stage, block) -> modules switched to a net by use_net
        self._per_net: Dict[Tuple[int, int], List[nn.Module]] = {}
        self._rates: Dict[str, Dict[Tuple[int, int], float]] = {}
        if drop_path == 'per_net' and drop_path_rate > 0:
            self._install_per_net_drop_path(drop_path_rate)
        for module in self.modules():
            if isinstance(module, DropPath):
                # VisionTransformer's rates are numpy floats, which
                # torch.compile cannot trace as a Python constant.
                module.drop_prob = float(module.drop_prob)

    def _install_per_net_drop_path(self, drop_path_rate: float) -> None:
        """Replace the blocks' ``DropPath`` modules by
        :class:`PerNetDropPath` with each net's stock rate."""
        for net, path in self.tree.paths.items():
            rates = stock_rates(drop_path_rate, len(path),
                                self.drop_path_linspace)
            self._rates[net] = dict(zip(path, rates))
        for (stage, block) in self.tree.paths[FULL_NET]:
            module = self.block_module(stage, block)
            users = {
                net: r[(stage, block)]
                for net, r in self._rates.items() if (stage, block) in r
            }
            for name, child in list(module.named_modules()):
                if not isinstance(child, DropPath):
                    continue
                parent_name, _, attr = name.rpartition('.')
                parent = (module.get_submodule(parent_name)
                          if parent_name else module)
                new = PerNetDropPath(users)
                setattr(parent, attr, new)
                self._per_net.setdefault((stage, block), []).append(new)

    def add_per_net_modules(self, stage: int, block: int,
                            modules: Sequence[nn.Module]) -> None:
        """Modules of block ``(stage, block)`` that :func:`use_net` switches
        to the net that runs it (e.g. per-net BatchNorm statistics)."""
        self._per_net.setdefault((stage, block), []).extend(modules)

    # ------------------------------------------------------------------ #
    # what a family says (the module docstring)
    # ------------------------------------------------------------------ #
    def block_module(self, stage: int, block: int) -> nn.Module:
        """The module of block ``(stage, block)``."""
        raise NotImplementedError

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def enter_stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        return x

    def run_block(self, stage: int, block: int,
                  x: torch.Tensor) -> torch.Tensor:
        return self.block_module(stage, block)(x)

    def stage_output(self, stage: int, x: torch.Tensor):
        return x

    def stage_map(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        return x

    def block_prefix(self, stage: int, block: int) -> str:
        raise NotImplementedError

    @classmethod
    def stock_class(cls) -> type:
        """The stock MMPretrain class the family extends."""
        return next(c for c in cls.__mro__[1:]
                    if c.__module__.startswith('mmpretrain.'))

    @classmethod
    def dynamic_args(cls) -> Tuple[str, ...]:
        """The arguments the stock class does not take (asked from the
        signatures, not listed)."""
        own = inspect.signature(cls.__init__).parameters
        stock = inspect.signature(cls.stock_class().__init__).parameters
        return tuple(k for k in own if k not in stock and k != 'kwargs')

    def stock_kwargs(self, src: dict) -> dict:
        """``src`` (the DDNN's backbone config) without what the stock
        config of a net sets itself or does not take."""
        drop = ('type', 'init_cfg', 'arch', *self.dynamic_args())
        return {k: v for k, v in src.items() if k not in drop}

    #: The stock class's registered name, and the prefix of arch names.
    stock_type = ''
    arch_prefix = ''

    def net_arch(self, net: str) -> Union[str, dict]:
        """The stock class's ``arch`` of ``net``: a name of its arch table
        where one fits, else a dict."""
        raise NotImplementedError

    def custom_arch_name(self, arch: dict) -> str:
        """A short name of an arch dict, e.g. ``'d3-3-9-3'``."""
        return 'd' + '-'.join(map(str, arch['depths']))

    def net_arch_name(self, net: str) -> str:
        """E.g. ``'convnext-tiny'``, ``'swin-d2-2-4-2'``."""
        arch = self.net_arch(net)
        name = arch if isinstance(arch, str) else self.custom_arch_name(arch)
        return f'{self.arch_prefix}-{name}'

    def plain_backbone_cfg(self, net: str, src: dict) -> dict:
        """The stock backbone config of ``net`` (``src``: the DDNN's backbone
        config): the stock class with the net's arch."""
        cfg = self.stock_kwargs(src)
        cfg.update(type=self.stock_type, arch=self.net_arch(net))
        return cfg

    # ------------------------------------------------------------------ #
    # the nets a stored config describes (read as numbers, never built)
    # ------------------------------------------------------------------ #
    #: The stock class's arch table, the arch keys that fix the weights'
    #: shapes, and the key among them that holds the blocks per stage.
    arch_table, arch_keys, depth_key = 'arch_settings', (), 'depths'

    def arch_numbers(self, arch) -> dict:
        """The numbers of ``arch`` (a name of the stock table or a dict, as
        the stock class reads it) on :attr:`arch_keys`, lists as tuples."""
        if isinstance(arch, str):
            table = getattr(self, self.arch_table)
            found = table.get(arch, table.get(arch.lower()))
            if found is None:
                raise ValueError(f'{arch!r} is not an arch of '
                                 f'{self.stock_type} ({sorted(table)})')
            arch = found
        if not isinstance(arch, dict) or any(k not in arch
                                             for k in self.arch_keys):
            raise ValueError(f'arch {arch!r} is neither a name nor a dict '
                             f'with {list(self.arch_keys)}')
        return {
            k: tuple(v) if isinstance(v, (list, tuple)) else v
            for k, v in ((k, arch[k]) for k in self.arch_keys)
        }

    def stored_types(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """The backbone types (registered names) a stored config may
        have: this family's dynamic ones and the stock ones (one net)."""
        return (type(self).__name__, ), (self.stock_type, )

    def stored_arch(self, stored: dict, kind: str) -> Tuple[tuple, str]:
        """``(what fixes the weights' shapes, blocks per stage first; its
        description)`` of a stored backbone config of type ``kind``."""
        cls = type(self) if kind in self.stored_types()[0] \
            else self.stock_class()
        arch = stored.get(
            'arch',
            inspect.signature(cls.__init__).parameters['arch'].default)
        return self._arch_key(self.arch_numbers(arch)), f'with arch {arch!r}'

    def built_arch(self) -> Tuple[tuple, str]:
        """:meth:`stored_arch` of this backbone."""
        arch = self.net_arch(FULL_NET)
        return self._arch_key(self.arch_numbers(arch)), f'with arch {arch!r}'

    def _arch_key(self, numbers: dict) -> tuple:
        depths = numbers[self.depth_key]
        blocks = depths if isinstance(depths, tuple) else (depths, )
        return (blocks, ) + tuple(sorted(numbers.items()))

    def stored_nets(self, stored: dict
                    ) -> Optional[Dict[str, Tuple[Tuple[int, ...], ...]]]:
        """``{net: block indices per stage}`` of the model a stored
        (literal) backbone config describes, computed from its numbers and
        checked against this backbone, whose sizes bound everything; None
        when it is not a type of this family.

        Raises:
            ValueError: It is another architecture of this family, or its
                sub-nets do not fit this backbone (the message continues
                the name of its source).
        """
        kind = stored.get('type')
        kind = kind.split('.')[-1] if isinstance(kind, str) else None
        dynamic, stock = self.stored_types()
        if kind not in dynamic + stock:
            return None
        built, built_text = self.built_arch()
        try:
            arch, text = self.stored_arch(stored, kind)
        except (KeyError, TypeError, ValueError) as e:
            arch, text = None, f'({e})'
        if arch != built:
            raise ValueError(
                f'was trained as a {kind} {text}, but the config builds '
                f'{type(self).__name__} {built_text}: it is a checkpoint of '
                'another architecture')
        blocks = built[0]
        if kind in stock:  # one net
            return {FULL_NET: tuple(tuple(range(n)) for n in blocks)}
        subs = stored.get('sub_depths', stored.get('sub_stage_blocks', ()))
        try:
            tree = NetTree(blocks, subs or (),
                           stored.get('block_choice', 'first'))
        except (TypeError, ValueError) as e:
            raise ValueError(f'stores sub-nets that do not fit this '
                             f'backbone: {e}') from None
        return dict(tree.net_blocks)

    # ------------------------------------------------------------------ #
    # the nets
    # ------------------------------------------------------------------ #
    @property
    def net_names(self) -> List[str]:
        """Names of all nets: ``'full'`` first, then ``'sub0'``, ..."""
        return self.tree.net_names

    @property
    def sub_net_names(self) -> List[str]:
        return [n for n in self.net_blocks if n != FULL_NET]

    def blocks_per_stage(self, net: str) -> List[int]:
        """Block count per stage of ``net``."""
        return [len(s) for s in self.net_blocks[self.tree.check_net(net)]]

    @property
    def distill_stages(self) -> Tuple[int, ...]:
        """The stages attention distillation matches by default."""
        if self.default_distill_stages is not None:
            return tuple(self.default_distill_stages)
        return tuple(sorted(self.out_indices))

    # ------------------------------------------------------------------ #
    # forward
    # ------------------------------------------------------------------ #
    def forward_block(self, stage: int, block: int, x: torch.Tensor,
                      net: str) -> torch.Tensor:
        """Run block ``(stage, block)`` on ``x`` as ``net`` (its per-net
        modules switched to it), entering the stage first at block 0."""
        modules = self._per_net.get((stage, block))
        with use_net(modules, net) if modules else nullcontext():
            if block == 0 and stage > 0:
                x = self.enter_stage(stage, x)
            return self.run_block(stage, block, x)

    def walk_groups(self, nets: Sequence[str]) -> List[List[str]]:
        """The nets :meth:`walk_nets` runs together, group by group (all of
        them here; names already checked)."""
        return [list(nets)]

    def group_context(self, group: Sequence[str]):
        """The context a group of :meth:`walk_groups` runs in, stem
        included."""
        return nullcontext()

    def block_variant(self) -> Optional[Callable[[str, int, int], float]]:
        """What besides the input separates nets at a block: in training
        with per-net drop path rates, the rate (nets with different rates
        run the block separately); otherwise nothing."""
        if not self._rates or not self.training:
            return None
        rates = self._rates
        return lambda net, stage, block: rates[net][(stage, block)]

    def walk(self, x, group: Sequence[str], run_block: Callable,
             out_stages: Sequence[int], visit: Visit) -> None:
        """:meth:`NetTree.walk` of ``group`` from ``x`` (the stem's output),
        separating nets by :meth:`block_variant`."""
        self.tree.walk(x, group, run_block, out_stages, visit,
                       self.block_variant())

    def walk_nets(self, x: torch.Tensor, nets: Sequence[str], visit: Visit,
                  out_stages: Optional[Sequence[int]] = None) -> None:
        """Run ``nets`` on one batch through the net tree: the stem, then
        every block once per distinct input (:meth:`walk`), calling
        ``visit(node, y)`` at each block; ``node.features`` names the nets
        whose output of a stage in ``out_stages`` (default
        ``out_indices``) ``y`` is. The one traversal behind
        :meth:`forward_nets` and the memory-efficient training step."""
        if out_stages is None:
            out_stages = self.out_indices
        for group in self.walk_groups(nets):
            with self.group_context(group):
                self.walk(self.forward_stem(x), group, self.forward_block,
                          out_stages, visit)

    def forward_net_stages(self, x: torch.Tensor, nets: Sequence[str],
                           stages: Sequence[int]
                           ) -> List[Tuple[torch.Tensor, ...]]:
        """For each net, the raw output (the format passed between blocks)
        of each of ``stages``, in order."""
        nets = [self.tree.check_net(n) for n in nets]
        outs = {net: {} for net in nets}

        def keep_features(node: TreeNode, y: torch.Tensor):
            for net in node.features:
                outs[net][node.stage] = y
            return y, None

        self.walk_nets(x, nets, keep_features, stages)
        return [tuple(outs[n][s] for s in sorted(outs[n])) for n in nets]

    def forward_nets(self,
                     x: torch.Tensor,
                     nets: Optional[Sequence[str]] = None) -> List[tuple]:
        """Run several nets on one batch.

        Args:
            x (Tensor): Input images, ``(N, C, H, W)``.
            nets (Sequence[str], optional): Nets to run. Defaults to all.

        Returns:
            list[tuple]: For each net, its outputs at ``out_indices`` as the
            stock class's ``forward`` returns them.
        """
        stages = sorted(self.out_indices)
        raw = self.forward_net_stages(x, nets or self.net_names, stages)
        return [
            tuple(self.stage_output(s, f) for s, f in zip(stages, feats))
            for feats in raw
        ]

    def forward(self, x: torch.Tensor) -> tuple:
        """Run the full net; the stock class's outputs."""
        return self.forward_nets(x, [FULL_NET])[0]

    def plain_key(self, net: str, key: str) -> str:
        """The backbone state-dict key (relative, e.g. ``'stages.2.5.gamma'``)
        of ``net``'s copy of the plain model's ``key``: its blocks
        renumbered ``0..k-1`` back to the full net's indices."""
        blocks = self.net_blocks[net]
        for stage, indices in enumerate(blocks):
            for idx, block in enumerate(indices):
                plain = self.block_prefix(stage, idx)
                if key.startswith(plain):
                    return self.block_prefix(stage, block) + key[len(plain):]
        return key

# Copyright (c) mmekd contributors. All rights reserved.
"""The net tree: one owner of which blocks each net runs, in which order."""
import pytest
import torch

from mmekd.models.backbones import NetTree, TreeNode
from mmekd.vocabulary import UnknownNetError, check_net_name


def test_paths_and_input_groups():
    tree = NetTree((3, 4, 6, 3), [[2, 2, 2, 2], [1, [0, 3], 2, 1]])
    assert tree.net_names == ['full', 'sub0', 'sub1']
    assert tree.paths['sub0'][:3] == [(0, 0), (0, 1), (1, 0)]
    assert tree.paths['sub1'][:3] == [(0, 0), (1, 0), (1, 3)]
    groups = tree.input_groups()
    assert groups[(0, 0)] == [['full', 'sub0', 'sub1']]
    assert groups[(0, 1)] == [['full', 'sub0']]
    # (1, 0) is reached from (0, 2) by full, from (0, 1) by sub0 and from
    # (0, 0) by sub1: three inputs.
    assert groups[(1, 0)] == [['full'], ['sub0'], ['sub1']]


def test_walk_runs_each_block_once_per_input_depth_first():
    tree = NetTree((2, 2), [[1, 1], [2, [0]]])
    calls, nodes = [], []

    def run_block(stage, block, x, net):
        calls.append((stage, block, net))
        return x + 1

    def visit(node: TreeNode, y):
        nodes.append(node)
        return y, (lambda: calls.append(('after', node.stage, node.block)))

    tree.walk(torch.zeros(1), ['full', 'sub0', 'sub1'], run_block,
              out_stages=(0, 1), visit=visit)
    # Block (0, 0) once for all, (0, 1) and (1, 0) once for full and sub1
    # (same input); the full net's subtree first; each 'after' once the
    # tree below its block is done.
    assert calls == [
        (0, 0, 'full'), (0, 1, 'full'), (1, 0, 'full'), (1, 1, 'full'),
        ('after', 1, 1), ('after', 1, 0), ('after', 0, 1), (1, 0, 'sub0'),
        ('after', 1, 0), ('after', 0, 0)]
    first = nodes[0]
    assert (first.nets, first.ends, first.features, first.branches) == (
        ['full', 'sub0', 'sub1'], [], ['sub0'], 2)
    sub1_end = [n for n in nodes if n.ends == ['sub1']][0]
    assert (sub1_end.stage, sub1_end.block, sub1_end.nets,
            sub1_end.features, sub1_end.branches) == (1, 0, ['full', 'sub1'],
                                                      ['sub1'], 1)


def test_one_net_name_check():
    with pytest.raises(UnknownNetError,
                       match=r"unknown net 'sub5'; this model has \['full'\]"):
        check_net_name('sub5', ['full'])
    assert issubclass(UnknownNetError, KeyError)
    assert issubclass(UnknownNetError, ValueError)


def test_teacher_label_loss_is_computed_once(tiny_ddnn_cfg, monkeypatch):
    """The memory-efficient step computes one label loss per net (it used
    to recompute the teacher's for every student and throw it away)."""
    from mmpretrain.structures import DataSample

    from mmekd.engine.optim import SafeOptimWrapper
    from mmekd.registry import MODELS
    tiny_ddnn_cfg['backbone']['sub_depths'] = [[1, 1, 1, 1], [2, 1, 1, 1]]
    model = MODELS.build(tiny_ddnn_cfg)
    calls = []
    real = model.head.loss_by_target
    monkeypatch.setattr(model.head, 'loss_by_target',
                        lambda *a: calls.append(1) or real(*a))
    batch = dict(inputs=torch.rand(4, 3, 16, 16) * 255,
                 data_samples=[DataSample().set_gt_label(i % 3)
                               for i in range(4)])
    model.train_step(batch, SafeOptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.1)))
    assert len(calls) == 3


def test_old_field_names_still_work_with_a_warning():
    from mmekd.models.backbones import DepthDynamicResNetCIFAR
    new = DepthDynamicResNetCIFAR(
        18, sub_stage_blocks=[[1, 1, 1, 1]], norm_sharing='shared',
        base_channels=2, stem_channels=2)
    with pytest.warns(DeprecationWarning, match='sub_depths is deprecated'):
        old = DepthDynamicResNetCIFAR(
            18, sub_depths=[[1, 1, 1, 1]], private_norm=False,
            base_channels=2, stem_channels=2)
    assert old.net_blocks == new.net_blocks
    assert (old.norm_sharing, old.private_norm) == ('shared', False)
    assert list(old.state_dict()) == list(new.state_dict())
    with pytest.raises(ValueError, match=r"sub_stage_blocks\[0\] = \[1, 1\] "
                       'has 2 stages'):
        DepthDynamicResNetCIFAR(18, sub_stage_blocks=[[1, 1]])
    with pytest.raises(ValueError, match="norm_sharing must be one of"):
        DepthDynamicResNetCIFAR(18, norm_sharing=True)

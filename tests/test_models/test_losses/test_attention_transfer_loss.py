# Copyright (c) mmekd contributors. All rights reserved.
import math

import pytest
import torch
from torch.testing import assert_close

from mmekd.models import AttentionTransferLoss, attention_map
from mmekd.registry import MODELS


def _map_by_hand(feat, p, mode):
    """Attention maps ``(N, H*W)`` with plain Python arithmetic (float64)."""
    n, c, h, w = feat.shape
    f = feat.double().tolist()
    maps = []
    for i in range(n):
        a = [
            sum(abs(f[i][k][y][x])**p for k in range(c)) / c
            for y in range(h) for x in range(w)
        ]
        if mode == 'activation':
            norm = math.sqrt(sum(v * v for v in a))
            a = [v / norm for v in a]
        else:
            total = sum(math.exp(v) for v in a)
            a = [math.exp(v) / total for v in a]
        maps.append(a)
    return torch.tensor(maps, dtype=torch.float64)


def _loss_by_hand(students, teachers, p, mode, weight):
    total = 0.
    for s, t in zip(students, teachers):
        a_s, a_t = _map_by_hand(s, p, mode), _map_by_hand(t, p, mode)
        total += ((a_s - a_t)**2).mean().item()
    return weight * total


def test_attention_map_small_example():
    # One sample, 2 channels, 1 x 2 positions: channel mean of F^2 is
    # (1 + 9) / 2 = 5 and (4 + 0) / 2 = 2 -> L2-normalised (5, 2) / sqrt(29).
    feat = torch.tensor([[[[1., 2.]], [[-3., 0.]]]])
    assert_close(
        attention_map(feat, 2, 'activation'),
        torch.tensor([[5., 2.]]) / math.sqrt(29))
    assert_close(
        attention_map(feat, 2, 'spatial_softmax'),
        torch.tensor([[5., 2.]]).softmax(1))
    # p = 1: channel mean of |F| is (2, 1).
    assert_close(
        attention_map(feat, 1, 'activation'),
        torch.tensor([[2., 1.]]) / math.sqrt(5))


@pytest.mark.parametrize('mode', ['activation', 'spatial_softmax'])
@pytest.mark.parametrize('p', [2.0, 1.0])
def test_matches_hand_computation(mode, p):
    torch.manual_seed(0)
    # Two pairs at two resolutions; student and teacher channels may differ.
    students = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 3)]
    teachers = [torch.randn(2, 6, 4, 4), torch.randn(2, 5, 2, 3)]
    loss = AttentionTransferLoss(p=p, mode=mode, loss_weight=50.0)
    expected = _loss_by_hand(students, teachers, p, mode, 50.0)
    out = loss(students, teachers)
    assert out.dim() == 0 and out.dtype == torch.float32
    assert out.item() == pytest.approx(expected, rel=1e-5)
    # A single pair may be passed as tensors.
    assert loss(students[0], teachers[0]).item() == pytest.approx(
        _loss_by_hand(students[:1], teachers[:1], p, mode, 50.0), rel=1e-5)


def test_zero_for_scaled_teacher():
    # Activation maps are scale-free: 3 * F has the attention map of F.
    feat = torch.randn(2, 4, 3, 3)
    loss = AttentionTransferLoss(mode='activation')
    assert loss(feat, 3 * feat).item() == pytest.approx(0, abs=1e-6)
    assert loss(feat, torch.randn(2, 4, 3, 3)).item() > 1e-3


def test_gradient_reaches_student_only():
    torch.manual_seed(0)
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, requires_grad=True)
    AttentionTransferLoss()(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad.abs().sum() > 0


@pytest.mark.parametrize('mode', ['activation', 'spatial_softmax'])
def test_float32_for_bf16_inputs(mode):
    torch.manual_seed(0)
    student = torch.randn(2, 4, 3, 3).bfloat16()
    teacher = torch.randn(2, 4, 3, 3).bfloat16()
    loss = AttentionTransferLoss(mode=mode, loss_weight=1000.0)
    # The bf16 values, upcast; not the loss computed in bf16.
    expected = _loss_by_hand([student.float()], [teacher.float()], 2.0, mode,
                             1000.0)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        under_autocast = loss(student, teacher)
    for out in (loss(student, teacher), under_autocast):
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(expected, rel=1e-5)


def test_build_and_invalid_arguments():
    loss = MODELS.build(
        dict(
            type='mmekd.AttentionTransferLoss',
            p=1,
            mode='spatial_softmax',
            loss_weight=5))
    assert (loss.p, loss.mode, loss.loss_weight) == (1.0, 'spatial_softmax',
                                                     5.0)
    with pytest.raises(ValueError, match="mode must be 'activation' or"):
        AttentionTransferLoss(mode='softmax')
    with pytest.raises(ValueError, match="mode must be 'activation' or"):
        attention_map(torch.zeros(1, 1, 2, 2), mode='softmax')
    with pytest.raises(ValueError, match='p must be a finite number > 0'):
        AttentionTransferLoss(p=0)
    loss = AttentionTransferLoss()
    with pytest.raises(ValueError, match='2 student features but 1 teacher'):
        loss([torch.zeros(1, 1, 2, 2)] * 2, [torch.zeros(1, 1, 2, 2)])
    with pytest.raises(ValueError, match=r'same batch and resolution.*'
                       r'student \(1, 1, 2, 2\) and teacher \(1, 1, 4, 4\)'):
        loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('mode', ['activation', 'spatial_softmax'])
def test_p2_is_bit_identical_to_abs_pow_and_saves_less(dtype, mode):
    """p = 2 squares instead of ``abs().pow(2)``: same values and gradients
    bit for bit, one float32 copy of the feature map saved for backward
    instead of two."""
    feat = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(
        0)).to(dtype)

    def reference(x):
        a = x.float().abs().pow(2).mean(dim=1).flatten(1)
        if mode == 'activation':
            return torch.nn.functional.normalize(a, p=2, dim=1)
        return torch.nn.functional.softmax(a, dim=1)

    saved = {}
    grads = {}
    for name, fn in (('new', lambda x: attention_map(x, 2, mode)),
                     ('old', reference)):
        x = feat.clone().requires_grad_()
        total = [0]

        def pack(t, total=total):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(x)
        out.pow(3).sum().backward()
        saved[name], grads[name] = total[0], x.grad
        if name == 'new':
            new_out = out.detach()
        else:
            assert torch.equal(new_out, out.detach())
    assert torch.equal(grads['new'], grads['old'])
    fp32_feat = feat.numel() * 4
    assert saved['old'] - saved['new'] == fp32_feat

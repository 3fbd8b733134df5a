# Copyright (c) mmekd contributors. All rights reserved.
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from mmekd.models import KLDivLoss
from mmekd.registry import MODELS


def _kl_by_hand(student, teacher, tau):
    """Per-sample T^2 * KL(softmax(t/T) || softmax(s/T)), in float64."""
    out = []
    for s_row, t_row in zip(student.double().tolist(),
                            teacher.double().tolist()):
        zs = [v / tau for v in s_row]
        zt = [v / tau for v in t_row]
        log_norm_s = math.log(sum(math.exp(v) for v in zs))
        log_norm_t = math.log(sum(math.exp(v) for v in zt))
        kl = sum(
            math.exp(t - log_norm_t) * ((t - log_norm_t) - (s - log_norm_s))
            for s, t in zip(zs, zt))
        out.append(tau**2 * kl)
    return torch.tensor(out, dtype=torch.float64)


def test_two_class_closed_form():
    # Teacher (0, 0) -> p_t = (1/2, 1/2); student (ln 3 * T, 0) at T = 2
    # -> p_s = (3/4, 1/4). KL = 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3).
    tau = 2.0
    student = torch.tensor([[math.log(3.) * tau, 0.]])
    teacher = torch.zeros(1, 2)
    loss = KLDivLoss(tau=tau, loss_weight=1.0)(student, teacher)
    assert loss.item() == pytest.approx(tau**2 * 0.5 * math.log(4 / 3))


@pytest.mark.parametrize('tau', [1.0, 4.0])
@pytest.mark.parametrize('loss_weight', [1.0, 0.3])
def test_matches_hand_computation(tau, loss_weight):
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 7) * 3, torch.randn(5, 7) * 3
    per_sample = _kl_by_hand(student, teacher, tau) * loss_weight
    loss = KLDivLoss(tau=tau, loss_weight=loss_weight)
    assert loss(student, teacher).dtype == torch.float32
    assert_close(
        loss(student, teacher).double(), per_sample.mean(), rtol=1e-5,
        atol=1e-6)
    # batchmean is the mean over samples, not over samples x classes.
    assert_close(
        loss(student, teacher),
        loss_weight * tau**2 * F.kl_div(
            F.log_softmax(student / tau, 1),
            F.log_softmax(teacher / tau, 1),
            log_target=True,
            reduction='batchmean'))
    loss_sum = KLDivLoss(tau=tau, loss_weight=loss_weight, reduction='sum')
    assert_close(
        loss_sum(student, teacher).double(), per_sample.sum(), rtol=1e-5,
        atol=1e-6)
    loss_none = KLDivLoss(tau=tau, loss_weight=loss_weight, reduction='none')
    assert_close(
        loss_none(student, teacher).double(), per_sample, rtol=1e-5,
        atol=1e-6)


def test_zero_for_equal_logits():
    x = torch.randn(4, 6)
    assert KLDivLoss()(x, x.clone()).abs().item() < 1e-6


def test_gradient_reaches_student_only():
    torch.manual_seed(0)
    tau, n = 4.0, 3
    student = torch.randn(n, 5, requires_grad=True)
    teacher = torch.randn(n, 5, requires_grad=True)
    KLDivLoss(tau=tau, loss_weight=2.0)(student, teacher).backward()
    assert teacher.grad is None
    # d/dz_s [w T^2 KL] / N = w T (p_s - p_t) / N
    p_s = (student.detach() / tau).softmax(1)
    p_t = (teacher.detach() / tau).softmax(1)
    assert_close(student.grad, 2.0 * tau * (p_s - p_t) / n)


def test_float32_for_bf16_inputs():
    torch.manual_seed(0)
    student = torch.randn(4, 10).bfloat16()
    teacher = torch.randn(4, 10).bfloat16()
    loss = KLDivLoss(tau=4.0)
    expected = _kl_by_hand(student.float(), teacher.float(), 4.0).mean()
    for out in (loss(student, teacher), _under_autocast(loss, student,
                                                        teacher)):
        assert out.dtype == torch.float32
        assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def _under_autocast(loss, *args):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        return loss(*args)


def test_build_and_invalid_arguments():
    loss = MODELS.build(dict(type='mmekd.KLDivLoss', tau=2, loss_weight=3))
    assert (loss.tau, loss.loss_weight) == (2.0, 3.0)
    with pytest.raises(ValueError, match='tau must be a finite number > 0'):
        KLDivLoss(tau=0)
    with pytest.raises(ValueError, match='reduction must be'):
        KLDivLoss(reduction='mean')
    with pytest.raises(ValueError, match=r'student logits \(2, 3\) and '
                       r'teacher logits \(2, 4\)'):
        KLDivLoss()(torch.zeros(2, 3), torch.zeros(2, 4))

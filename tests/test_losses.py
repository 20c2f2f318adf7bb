"""Every loss against numbers worked out by hand."""
import math

import pytest
import torch

from teachclip_lite.losses import coarse_loss, fine_loss, info_nce, teaching_loss


def test_info_nce_known_matrix():
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    # rows:    -log(e^2/(e^2+1)), -log(e^3/(e^1+e^3))
    # columns: -log(e^2/(e^2+e^1)), -log(e^3/(e^0+e^3))
    rows = math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-2))
    cols = math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3))
    assert info_nce(logits).item() == pytest.approx((rows / 2 + cols / 2) / 2, abs=1e-6)


def test_info_nce_is_symmetric_and_small_when_diagonal_dominates():
    logits = torch.randn(5, 5)
    assert info_nce(logits).item() == pytest.approx(info_nce(logits.t()).item(), abs=1e-6)
    assert info_nce(torch.eye(5) * 50).item() < 1e-6


def test_pearson_coarse_zero_for_identical_and_two_for_anti_correlated():
    s = torch.randn(4, 4)
    assert coarse_loss(s, s.clone(), "pearson").item() == pytest.approx(0, abs=1e-6)
    # a softmax row is invariant to adding a constant: the loss is too
    assert coarse_loss(s, s + 3.0, "pearson").item() == pytest.approx(0, abs=1e-6)
    # 2x2: the softmax rows [p, 1-p] and [1-p, p] are perfectly anti-correlated -> 1 - (-1) = 2 per direction
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert coarse_loss(a, -a, "pearson").item() == pytest.approx(4.0, abs=1e-5)


def test_ce_and_kl_coarse_by_hand():
    s = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])
    # student rows uniform: CE = -sum q log(1/2) = log 2 per row, both directions
    assert coarse_loss(s, t, "ce").item() == pytest.approx(2 * math.log(2), abs=1e-6)
    # KL(q || uniform) with q = (3/4, 1/4)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert coarse_loss(s, t, "kl").item() == pytest.approx(2 * kl, abs=1e-6)
    with pytest.raises(ValueError):
        coarse_loss(s, t, "l2")


def test_coarse_gradient_reaches_only_the_student():
    s = torch.randn(3, 3, requires_grad=True)
    t = torch.randn(3, 3, requires_grad=True)
    coarse_loss(s, t).backward()
    assert s.grad is not None and t.grad is None


def test_fine_ce_matches_manual_sum_and_ignores_padding():
    scores = torch.tensor([[1.0, 2.0, 0.5, 9.0]])
    mask = torch.tensor([[True, True, True, False]])
    r = torch.tensor([[0.2, 0.5, 0.3, 0.0]])
    z = math.exp(1.0) + math.exp(2.0) + math.exp(0.5)
    manual = -(0.2 * (1.0 - math.log(z)) + 0.5 * (2.0 - math.log(z)) + 0.3 * (0.5 - math.log(z)))
    assert fine_loss(scores, r, mask, "ce").item() == pytest.approx(manual, abs=1e-6)


def test_fine_pearson_and_l1():
    r = torch.tensor([[0.1, 0.2, 0.7]])
    scores = r.log()  # softmax(log r) = r
    assert fine_loss(scores, r, kind="pearson").item() == pytest.approx(0, abs=1e-6)
    assert fine_loss(scores, r, kind="l1").item() == pytest.approx(0, abs=1e-6)
    uniform = torch.zeros(1, 3)
    assert fine_loss(uniform, r, kind="l1").item() == pytest.approx(abs(1 / 3 - .1) + abs(1 / 3 - .2) + abs(1 / 3 - .7))


def test_teaching_loss_weights_and_teacher_average():
    torch.manual_seed(0)
    s, scores = torch.randn(4, 4), torch.randn(4, 6)
    t1, t2 = torch.randn(4, 4), torch.randn(4, 4)
    r1, r2 = torch.rand(4, 6).softmax(-1), torch.rand(4, 6).softmax(-1)
    loss, parts = teaching_loss(s, scores, None, [t1, t2], [r1, r2])
    c = (coarse_loss(s, t1) + coarse_loss(s, t2)) / 2
    f = (fine_loss(scores, r1) + fine_loss(scores, r2)) / 2
    assert loss.item() == pytest.approx((0.2 * info_nce(s) + c + 2 * f).item(), abs=1e-5)
    assert set(parts) == {"nce", "coarse", "fine", "loss"}
    loss0, parts0 = teaching_loss(s, scores, None, [t1], [r1], weights=(1.0, 0.0, 0.0))
    assert loss0.item() == pytest.approx(info_nce(s).item()) and set(parts0) == {"nce", "loss"}
    with pytest.raises(ValueError):
        teaching_loss(s, None, None, [t1], [r1])


def test_ce_and_kl_coarse_have_the_same_gradient():
    """They differ by the teacher's entropy, a constant for the student: same gradients."""
    torch.manual_seed(0)
    t = torch.randn(6, 6) * 5
    grads = []
    for kind in ("ce", "kl"):
        s = (torch.randn(6, 6, generator=torch.Generator().manual_seed(1)) * 5).requires_grad_()
        coarse_loss(s, t, kind).backward()
        grads.append(s.grad)
    assert torch.equal(grads[0], grads[1])   # bit for bit: kl is ce plus a constant (losses.coarse_loss)

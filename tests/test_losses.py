"""Every loss against numbers worked out by hand, and against the official train.py formulas.

`_official_*` below transcribe TeachCLIP's train.py (train_epoch) line by line in plain
torch, float64: the kit's losses must agree with them to 1e-6 (relative) on random inputs.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from teachclip_lite.losses import (CE_WEIGHTS, PEARSON_WEIGHTS, coarse_loss, fine_loss, info_nce, recipe_weights,
                                   teaching_loss)


# ----------------------------------------------------------------- the official formulas, transcribed

def _official_gt(sim):
    def cross_en(x):
        return (-torch.diag(F.log_softmax(x, dim=-1))).mean()
    return (cross_en(sim) + cross_en(sim.T)) / 2


def _official_coarse(sim, teacher, method):
    if method == "ce":
        logp, logpT = F.log_softmax(sim, dim=-1), F.log_softmax(sim.T, dim=-1)
        return (-1.0 * teacher.softmax(-1) * logp).mean() + (-1.0 * teacher.T.softmax(-1) * logpT).mean()
    if method == "pear":
        def pear(p, q):
            p, q = p - p.mean(-1).view(-1, 1), q - q.mean(-1).view(-1, 1)
            return 1 - (p * q).sum(1) / (p.norm(dim=1) * q.norm(dim=1))
        return pear(sim.softmax(-1), teacher.softmax(-1)).mean() + pear(sim.T.softmax(-1), teacher.T.softmax(-1)).mean()
    if method == "l1":
        return torch.nn.SmoothL1Loss(reduction="mean")(teacher, sim).mean()
    raise AssertionError(method)


def _official_fine(frame_weight, rel, method):
    if method == "ce":
        return (-1 * torch.log(frame_weight) * rel).mean()
    if method == "pear":
        w, r = frame_weight - frame_weight.mean(-1).view(-1, 1), rel - rel.mean(-1).view(-1, 1)
        return (1 - (w * r).sum(1) / (w.norm(dim=1) * r.norm(dim=1))).mean()
    if method == "l1":
        return torch.nn.SmoothL1Loss(reduction="mean")(frame_weight, rel).mean()
    raise AssertionError(method)


def _official_total(sim, scores, teachers, rels, distill, fine):
    gt = _official_gt(sim)
    d = sum(_official_coarse(sim, t, distill) for t in teachers) / len(teachers)
    f = sum(_official_fine(scores.softmax(-1), r, fine) for r in rels) / len(rels)
    return gt + d * 10 + f if distill == "ce" else gt * 0.2 + d + f * 2.0


def _random(b=7, t=12, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    sim = torch.randn(b, b, generator=g, dtype=torch.float64) * 10
    teachers = [torch.randn(b, b, generator=g, dtype=torch.float64) * 10 for _ in range(k)]
    scores = torch.randn(b, t, generator=g, dtype=torch.float64)
    rels = [(torch.randn(b, t, generator=g, dtype=torch.float64) * 0.05).softmax(-1) for _ in range(k)]
    return sim, teachers, scores, rels


KIT = {"pear": "pearson", "ce": "ce", "l1": "l1"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_info_nce_is_the_official_gt_loss(seed):
    sim = _random(seed=seed)[0]
    assert info_nce(sim).item() == pytest.approx(_official_gt(sim).item(), rel=1e-6)


@pytest.mark.parametrize("method", ["pear", "ce", "l1"])
@pytest.mark.parametrize("seed", [0, 1])
def test_coarse_losses_are_the_official_ones(method, seed):
    sim, teachers, _, _ = _random(seed=seed)
    ours = coarse_loss(sim, torch.stack(teachers), KIT[method]).item()
    official = sum(_official_coarse(sim, t, method) for t in teachers).item() / len(teachers)
    assert ours == pytest.approx(official, rel=1e-6)
    assert coarse_loss(sim, teachers[0], KIT[method]).item() == pytest.approx(
        _official_coarse(sim, teachers[0], method).item(), rel=1e-6)


@pytest.mark.parametrize("method", ["ce", "pear", "l1"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fine_losses_are_the_official_ones(method, seed):
    _, _, scores, rels = _random(seed=seed)
    ours = fine_loss(scores, torch.stack(rels), None, KIT[method]).item()
    official = sum(_official_fine(scores.softmax(-1), r, method) for r in rels).item() / len(rels)
    assert ours == pytest.approx(official, rel=1e-6)
    full = torch.ones(scores.shape, dtype=torch.bool)   # an all-True mask is the same as no mask
    assert fine_loss(scores, rels[0], full, KIT[method]).item() == pytest.approx(
        _official_fine(scores.softmax(-1), rels[0], method).item(), rel=1e-6)


@pytest.mark.parametrize("distill,fine", [("pear", "ce"), ("ce", "ce"), ("pear", "pear"), ("l1", "l1"),
                                          ("ce", "pear")])
def test_teaching_totals_are_the_official_recipes(distill, fine):
    sim, teachers, scores, rels = _random(seed=3, k=3)
    loss, parts = teaching_loss(sim, scores, None, teachers, rels, coarse=KIT[distill], fine=KIT[fine])
    assert loss.item() == pytest.approx(_official_total(sim, scores, teachers, rels, distill, fine).item(), rel=1e-6)
    assert set(parts) == {"nce", "coarse", "fine", "loss"}


def test_recipe_weights():
    assert recipe_weights("pearson") == PEARSON_WEIGHTS == (0.2, 1.0, 2.0)
    assert recipe_weights("l1") == PEARSON_WEIGHTS
    assert recipe_weights("ce") == CE_WEIGHTS == (1.0, 10.0, 1.0)
    with pytest.raises(ValueError):
        recipe_weights("l2")


# ----------------------------------------------------------------- by hand

def test_info_nce_known_matrix():
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    rows = math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-2))
    cols = math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3))
    assert info_nce(logits).item() == pytest.approx((rows / 2 + cols / 2) / 2, abs=1e-6)
    assert info_nce(torch.eye(5) * 50).item() < 1e-6


def test_pearson_coarse_zero_for_identical_and_two_for_anti_correlated():
    s = torch.randn(4, 4)
    assert coarse_loss(s, s.clone(), "pearson").item() == pytest.approx(0, abs=1e-6)
    assert coarse_loss(s, s + 3.0, "pearson").item() == pytest.approx(0, abs=1e-6)  # softmax ignores a shift
    # 2x2: the softmax rows [p, 1-p] and [1-p, p] are perfectly anti-correlated -> 1 - (-1) = 2 per direction
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert coarse_loss(a, -a, "pearson").item() == pytest.approx(4.0, abs=1e-5)


def test_ce_kl_and_l1_coarse_by_hand():
    s = torch.zeros(2, 2)
    t = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])
    # student rows uniform: sum_j -q_j log(1/2) = log 2 per row; the mean over the 4 elements is log(2)/2,
    # and the two directions add: log 2 in all (a row-sum would give 2 log 2: B times more)
    assert coarse_loss(s, t, "ce").item() == pytest.approx(math.log(2), abs=1e-6)
    kl_row = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert coarse_loss(s, t, "kl").item() == pytest.approx(2 * kl_row / 2, abs=1e-6)
    # SmoothL1, beta 1: |d| = log 3 > 1 on the diagonal -> |d| - 0.5; 0 elsewhere; mean over 4
    assert coarse_loss(s, t, "l1").item() == pytest.approx(2 * (math.log(3.0) - 0.5) / 4, abs=1e-6)
    with pytest.raises(ValueError):
        coarse_loss(s, t, "l2")


def test_coarse_gradient_reaches_only_the_student():
    s = torch.randn(3, 3, requires_grad=True)
    t = torch.randn(3, 3, requires_grad=True)
    for kind in ("pearson", "ce", "l1"):
        s.grad = None
        coarse_loss(s, t, kind).backward()
        assert s.grad is not None and t.grad is None


def test_fine_ce_is_a_mean_over_valid_elements_and_ignores_padding():
    scores = torch.tensor([[1.0, 2.0, 0.5, 9.0]])
    mask = torch.tensor([[True, True, True, False]])
    r = torch.tensor([[0.2, 0.5, 0.3, 0.0]])
    z = math.exp(1.0) + math.exp(2.0) + math.exp(0.5)
    manual = -(0.2 * (1.0 - math.log(z)) + 0.5 * (2.0 - math.log(z)) + 0.3 * (0.5 - math.log(z))) / 3
    assert fine_loss(scores, r, mask, "ce").item() == pytest.approx(manual, abs=1e-6)
    # without padding it is the official mean over all B x T elements (not a sum over frames)
    r2 = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
    assert fine_loss(torch.zeros(1, 4), r2, None, "ce").item() == pytest.approx(math.log(4) / 4, abs=1e-6)


def test_fine_pearson_and_l1_by_hand():
    r = torch.tensor([[0.1, 0.2, 0.7]])
    scores = r.log()  # softmax(log r) = r
    assert fine_loss(scores, r, kind="pearson").item() == pytest.approx(0, abs=1e-6)
    assert fine_loss(scores, r, kind="l1").item() == pytest.approx(0, abs=1e-6)
    uniform = torch.zeros(1, 3)
    # SmoothL1 with beta 1 on differences below 1: 0.5 d^2, mean over the 3 frames
    d = [1 / 3 - .1, 1 / 3 - .2, 1 / 3 - .7]
    assert fine_loss(uniform, r, kind="l1").item() == pytest.approx(sum(0.5 * x * x for x in d) / 3, abs=1e-7)
    with pytest.raises(ValueError):
        fine_loss(uniform, r, kind="kl")


def test_teaching_loss_weights_and_teacher_average():
    torch.manual_seed(0)
    s, scores = torch.randn(4, 4), torch.randn(4, 6)
    t1, t2 = torch.randn(4, 4), torch.randn(4, 4)
    r1, r2 = torch.rand(4, 6).softmax(-1), torch.rand(4, 6).softmax(-1)
    loss, parts = teaching_loss(s, scores, None, [t1, t2], [r1, r2])
    c = (coarse_loss(s, t1) + coarse_loss(s, t2)) / 2
    f = (fine_loss(scores, r1) + fine_loss(scores, r2)) / 2
    assert loss.item() == pytest.approx((0.2 * info_nce(s) + c + 2 * f).item(), abs=1e-5)
    loss_ce, _ = teaching_loss(s, scores, None, [t1, t2], [r1, r2], coarse="ce")
    c_ce = (coarse_loss(s, t1, "ce") + coarse_loss(s, t2, "ce")) / 2
    assert loss_ce.item() == pytest.approx((info_nce(s) + 10 * c_ce + f).item(), abs=1e-5)
    loss0, parts0 = teaching_loss(s, scores, None, [t1], [r1], weights=(1.0, 0.0, 0.0))
    assert loss0.item() == pytest.approx(info_nce(s).item()) and set(parts0) == {"nce", "loss"}
    with pytest.raises(ValueError):
        teaching_loss(s, None, None, [t1], [r1])


def test_ce_and_kl_coarse_have_the_same_gradient():
    """They differ by the teacher's entropy, a constant for the student: same gradients."""
    t = torch.randn(6, 6, generator=torch.Generator().manual_seed(0)) * 5
    grads = []
    for kind in ("ce", "kl"):
        s = (torch.randn(6, 6, generator=torch.Generator().manual_seed(1)) * 5).requires_grad_()
        coarse_loss(s, t, kind).backward()
        grads.append(s.grad)
    assert torch.equal(grads[0], grads[1])   # bit for bit: kl is ce plus a constant (losses.coarse_loss)

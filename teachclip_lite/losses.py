"""The losses TeachCLIP trains with, one small function each, as the official train.py computes them.

Ground truth is symmetric InfoNCE over the student's B x B text-video logits: the mean
of the two directions of the mean over rows of -log P_ii (CLIP4Clip's `CrossEn`).
Teaching adds two channels (TeachCLIP, Tian et al. CVPR 2024):

- coarse-grained: make the student's B x B similarity distribution look like a
  teacher's, for the matrix and its transpose (the two directions are summed):
  "pearson" (default, the official "pear"): 1 - Pearson(P_i, Q_i) of the row-wise
  softmaxes, averaged over rows; "ce": -Q * log P averaged over ALL B x B elements
  (a mean over elements, not a sum over each row); "l1": SmoothL1 (beta 1, mean)
  between teacher and student logits. "kl" is a kit-only option: ce plus the
  teacher's negative entropy (no gradient), so it trains exactly as ce does.
- fine-grained: make the student's AFA frame weights w = softmax(s) (temperature 1)
  follow the teacher's text-to-frame relevance r of the matching pair: "ce" (default):
  -r * log w averaged over ALL B x T elements (not a sum over frames); "pearson":
  1 - Pearson(w_b, r_b) averaged over rows; "l1": SmoothL1 (beta 1, mean) between w and r.

Several teachers: each channel is the mean of its per-teacher losses. The totals are the
official recipes (`recipe_weights`): 0.2 * InfoNCE + 1 * coarse + 2 * fine, except with
the "ce" coarse loss (and the kit's "kl"), which uses 1 * InfoNCE + 10 * coarse + 1 * fine.

Padded frames (mask False) are left out of the fine losses' softmax and means; the
official code has no padding at training time, and without padding every loss here
equals the official one (tests/test_losses.py checks that to 1e-6 in float64).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

COARSE_LOSSES = ("pearson", "ce", "l1", "kl")
FINE_LOSSES = ("ce", "pearson", "l1")
PEARSON_WEIGHTS = (0.2, 1.0, 2.0)   # InfoNCE, coarse, fine: the official default (distill_method "pear" or "l1")
CE_WEIGHTS = (1.0, 10.0, 1.0)       # the official weights when distill_method is "ce"
DEFAULT_WEIGHTS = PEARSON_WEIGHTS


def recipe_weights(coarse: str = "pearson") -> tuple[float, float, float]:
    """The official (InfoNCE, coarse, fine) weights for a coarse loss (train.py picks them by distill_method)."""
    if coarse not in COARSE_LOSSES:
        raise ValueError(f"coarse loss {coarse!r} is not one of {COARSE_LOSSES}")
    return CE_WEIGHTS if coarse in ("ce", "kl") else PEARSON_WEIGHTS


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: pair i (row i, column i) is the positive; mean of text->video and video->text CE."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson correlation of each row of a with the same row of b (only over mask, if given).

    The official code divides by the product of the centred norms with no epsilon; the clamp
    only keeps a constant row (zero norm) from turning into NaN.
    """
    if mask is None:
        a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    else:
        m = mask.to(a.dtype)
        n = m.sum(-1, keepdim=True).clamp(min=1)
        a = (a - (a * m).sum(-1, keepdim=True) / n) * m
        b = (b - (b * m).sum(-1, keepdim=True) / n) * m
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-12)


def coarse_loss(student: torch.Tensor, teacher_stack: torch.Tensor, kind: str = "pearson") -> torch.Tensor:
    """Distil a teacher's [B, B] logits into the student's, over rows (t2v) plus columns (v2t).

    `teacher_stack` may also be [K, B, B] (K teachers at once): the result is the mean over teachers.
    """
    t = teacher_stack.detach()
    if kind == "l1":   # SmoothL1Loss(reduction="mean")(teacher, student): one term, no transpose
        return F.smooth_l1_loss(student.expand_as(t), t, beta=1.0)
    if kind not in COARSE_LOSSES:
        raise ValueError(f"coarse loss {kind!r} is not one of {COARSE_LOSSES}")
    total = student.new_zeros(())
    for s, q in ((student, t), (student.transpose(-1, -2), t.transpose(-1, -2))):
        if kind == "pearson":
            total = total + (1 - _pearson_rows(s.softmax(-1).expand_as(q), q.softmax(-1))).mean()
        else:  # "ce" / "kl": a mean over all elements (and teachers), as the official code takes it
            log_q = q.log_softmax(-1)
            total = total + (-(log_q.exp() * s.log_softmax(-1))).mean()
            if kind == "kl":  # KL(q || p) = CE(q, p) - H(q): H(q) has no gradient, so ce and kl train identically
                total = total + (log_q.exp() * log_q).mean()
    return total


def fine_loss(scores: torch.Tensor, relevance_stack: torch.Tensor, mask: torch.Tensor | None = None,
              kind: str = "ce") -> torch.Tensor:
    """Teach AFA where to look: scores [B, T] are the student's frame logits (weights = softmax(scores),
    temperature 1), relevance [B, T] the teacher's frame distribution for the same pair
    (or [K, B, T] for K teachers: the mean over teachers)."""
    r = relevance_stack.detach()
    if mask is None:
        mask = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    log_w = scores.masked_fill(~mask, float("-inf")).log_softmax(-1)
    m = mask.expand_as(r).to(r.dtype)
    count = m.sum().clamp(min=1)
    if kind == "ce":
        return -(r * log_w.masked_fill(~mask, 0)).mul(m).sum() / count
    w = log_w.exp()
    if kind == "pearson":
        return (1 - _pearson_rows(w.expand_as(r), r, mask.expand_as(r))).mean()
    if kind == "l1":
        return (F.smooth_l1_loss(w.expand_as(r), r, beta=1.0, reduction="none") * m).sum() / count
    raise ValueError(f"fine loss {kind!r} is not one of {FINE_LOSSES}")


def teaching_loss(student_logits: torch.Tensor, student_scores: torch.Tensor | None, mask: torch.Tensor | None,
                  teacher_logits: Sequence[torch.Tensor] = (), teacher_relevance: Sequence[torch.Tensor] = (),
                  weights: Sequence[float] | None = None, coarse: str = "pearson",
                  fine: str = "ce") -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts: w_nce * InfoNCE + w_coarse * mean_k coarse_k + w_fine * mean_k fine_k.

    `weights` None takes the official recipe of the coarse loss (`recipe_weights`). A channel
    whose weight is 0 (or that has no teachers) is skipped. Returns (loss, parts) where parts
    holds the unweighted components as floats, for progress bars and history. Logits [B, B + k] (k
    uncaptioned clips, TrainConfig.recombine) keep InfoNCE on the captioned square; the coarse loss sees all.
    """
    w_nce, w_coarse, w_fine = recipe_weights(coarse) if weights is None else weights
    nce = info_nce(student_logits[:, :student_logits.shape[0]])
    loss, parts = w_nce * nce, {"nce": nce.item()}
    if w_coarse and len(teacher_logits):   # all teachers in one batched call: the mean of their losses
        c = coarse_loss(student_logits, torch.stack(list(teacher_logits)), coarse)
        loss, parts["coarse"] = loss + w_coarse * c, c.item()
    if w_fine and len(teacher_relevance):
        if student_scores is None:
            raise ValueError("fine-grained teaching needs a student with AFA (frame scores)")
        f = fine_loss(student_scores, torch.stack(list(teacher_relevance)), mask, fine)
        loss, parts["fine"] = loss + w_fine * f, f.item()
    parts["loss"] = loss.item()
    return loss, parts

"""The losses TeachCLIP trains with, one small function each.

Ground truth is symmetric InfoNCE over the student's B x B text-video logits.
Teaching adds two channels (TeachCLIP, Tian et al. CVPR 2024):

- coarse-grained: make the student's B x B similarity distribution look like a
  teacher's. Default "pearson": 1 - Pearson correlation between the row-wise
  softmax of student and teacher logits, for the matrix and its transpose, summed.
  "ce" (soft-target cross-entropy) and "kl" are the alternatives.
- fine-grained: make the student's AFA frame weights (the temperature-1 softmax of
  its frame scores) follow the teacher's text-to-frame relevance of the matching
  pair. Default "ce": -sum_t r_t log w_t. "pearson" and "l1" are alternatives.

`teaching_loss` combines them with the paper's default weights
0.2 * InfoNCE + 1 * coarse + 2 * fine; several teachers average their losses.
All losses are means over the batch.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

COARSE_LOSSES = ("pearson", "ce", "kl")
FINE_LOSSES = ("ce", "pearson", "l1")
DEFAULT_WEIGHTS = (0.2, 1.0, 2.0)   # InfoNCE, coarse, fine


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: pair i (row i, column i) is the positive; mean of text->video and video->text CE."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None,
                  eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of a with the same row of b (only over mask, if given)."""
    if mask is None:
        mask = torch.ones_like(a, dtype=torch.bool)
    m = mask.float()
    n = m.sum(-1, keepdim=True).clamp(min=1)
    a = (a - (a * m).sum(-1, keepdim=True) / n) * m
    b = (b - (b * m).sum(-1, keepdim=True) / n) * m
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


def coarse_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "pearson") -> torch.Tensor:
    """Distil a teacher's [B, B] logits into the student's, over rows (t2v) plus columns (v2t).

    `teacher` may also be [K, B, B] (K teachers at once): the result is the mean over teachers.
    """
    teacher = teacher.detach()
    total = student.new_zeros(())
    for s, t in ((student, teacher), (student.transpose(-1, -2), teacher.transpose(-1, -2))):
        if kind == "pearson":
            total = total + (1 - _pearson_rows(s.softmax(-1).expand_as(t), t.softmax(-1))).mean()
        elif kind in ("ce", "kl"):
            log_q = t.log_softmax(-1)
            total = total + -(log_q.exp() * s.log_softmax(-1)).sum(-1).mean()
            if kind == "kl":  # KL(q || p) = CE(q, p) - H(q): H(q) has no gradient, so ce and kl train identically
                total = total + (log_q.exp() * log_q).sum(-1).mean()
        else:
            raise ValueError(f"coarse loss {kind!r} is not one of {COARSE_LOSSES}")
    return total


def fine_loss(scores: torch.Tensor, relevance: torch.Tensor, mask: torch.Tensor | None = None,
              kind: str = "ce") -> torch.Tensor:
    """Teach AFA where to look: scores [B, T] are the student's frame logits (weights = softmax(scores),
    temperature 1), relevance [B, T] the teacher's frame distribution for the same pair
    (or [K, B, T] for K teachers: the mean over teachers)."""
    relevance = relevance.detach()
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    log_w = scores.masked_fill(~mask, float("-inf")).log_softmax(-1)
    if kind == "ce":
        return -(relevance * log_w.masked_fill(~mask, 0)).sum(-1).mean()
    w = log_w.exp()
    if kind == "pearson":
        return (1 - _pearson_rows(w, relevance, mask)).mean()
    if kind == "l1":
        return ((w - relevance).abs() * mask).sum(-1).mean()
    raise ValueError(f"fine loss {kind!r} is not one of {FINE_LOSSES}")


def teaching_loss(student_logits: torch.Tensor, student_scores: torch.Tensor | None, mask: torch.Tensor | None,
                  teacher_logits: Sequence[torch.Tensor] = (), teacher_relevance: Sequence[torch.Tensor] = (),
                  weights: Sequence[float] = DEFAULT_WEIGHTS, coarse: str = "pearson",
                  fine: str = "ce") -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts: w_nce * InfoNCE + w_coarse * mean_k coarse_k + w_fine * mean_k fine_k.

    A channel whose weight is 0 (or that has no teachers) is skipped. Returns (loss, parts)
    where parts holds the unweighted components as floats, for progress bars and history.
    """
    w_nce, w_coarse, w_fine = weights
    nce = info_nce(student_logits)
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

"""The small pieces students and teachers share: a layer that starts at zero, the zero-initialised residual
head x + h(x) that stands in for fine-tuning CLIP (training starts from plain CLIP), and CLIP4Clip's mean
pooling of frame vectors (meanP)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ADAPTERS = ("none", "linear", "mlp")


def zero_init(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def residual_head(kind: str, dim: int) -> nn.Module | None:
    """h of a residual head x + h(x) whose last layer starts at zero: "none", "linear" or "mlp" (d -> 2d -> d)."""
    if kind == "none":
        return None
    if kind == "linear":
        return zero_init(nn.Linear(dim, dim))
    if kind == "mlp":
        return nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), zero_init(nn.Linear(2 * dim, dim)))
    raise ValueError(f"adapter {kind!r} is not one of {ADAPTERS}")


def mean_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """meanP: the L2-normalised mean of the valid rows of x [B, T, D] (mask [B, T]); normalise x first for
    CLIP4Clip's video vector."""
    m = mask[..., None].to(x.dtype)
    return F.normalize((x * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)

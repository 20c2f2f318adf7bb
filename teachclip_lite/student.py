"""The student: CLIP4Clip on cached CLIP features, one vector per video.

Everything here runs on the frozen backbone's projected features (features.py), so
the student's trainable parts are small heads that stand in for CLIP4Clip's
fine-tuning: a residual linear adapter on frames and on the sentence feature
(zero-initialised, so training starts from plain CLIP), an optional temporal
transformer ("seqTransf": frame position embeddings, a few layers, residual add),
and the aggregation:

- "meanP": mean of the L2-normalised frames, normalised again (CLIP4Clip meanP);
- "seqTransf": the same mean after the temporal transformer;
- "afa": Attentional frame-Feature Aggregation (TeachCLIP): a per-frame score
  s_t = Linear(ReLU(Linear(f_t))), weights w = softmax(s / afa_temperature) over
  valid frames, v = normalise(sum_t w_t f_t) over L2-normalised frames. The
  fine-grained teaching loss supervises softmax(s) at temperature 1, as the
  official code does; `frame_scores` hands those raw scores out.

Search cost is what makes this the student: the video side is one `dim` vector,
scored against a query by one dot product, exactly CLIP4Clip's cost. Fine-tuning
the backbone's last blocks end to end would need pixels, not cached features, and
is not done here.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .paths import atomic_open

KINDS = ("meanP", "seqTransf", "afa")
ADAPTERS = ("none", "linear", "mlp")


@dataclass
class StudentConfig:
    kind: str = "afa"                   # "meanP" | "seqTransf" | "afa"
    dim: int = 512                      # the backbone's embed_dim
    num_frames: int = 12
    layers: int = 4                     # temporal transformer layers (used when temporal)
    heads: int = 0                      # attention heads of the temporal transformer (0: dim // 64, at least 1)
    temporal: bool | None = None        # temporal transformer before aggregation (None: only for seqTransf)
    afa_temperature: float = 0.1        # softmax temperature of the AFA weights used for aggregation
    afa_hidden: int = 0                 # AFA score MLP width (0: dim)
    adapter: str = "mlp"                # residual heads on frames and text: "none" | "linear" | "mlp" (zero-init)
    logit_scale: float = 100.0          # initial score scale (CLIP's exp(logit_scale))
    learn_logit_scale: bool = True
    dropout: float = 0.1

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"student kind {self.kind!r} is not one of {KINDS}")
        if self.adapter not in ADAPTERS:
            raise ValueError(f"student adapter {self.adapter!r} is not one of {ADAPTERS}")

    @property
    def uses_temporal(self) -> bool:
        return self.kind == "seqTransf" if self.temporal is None else bool(self.temporal)


def _adapter(kind: str, dim: int) -> nn.Module | None:
    """A residual head x + h(x) whose last layer starts at zero: training starts from plain CLIP."""
    if kind == "none":
        return None
    return _zero(nn.Linear(dim, dim)) if kind == "linear" else nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), _zero(nn.Linear(2 * dim, dim)))


def _zero(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class Student(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.text_adapter = _adapter(cfg.adapter, d)
        self.frame_adapter = _adapter(cfg.adapter, d)
        if cfg.uses_temporal:
            heads = cfg.heads or max(1, d // 64)
            self.position = nn.Parameter(torch.randn(cfg.num_frames, d) * 0.01)
            layer = nn.TransformerEncoderLayer(d, heads, 4 * d, cfg.dropout, batch_first=True, norm_first=True)
            self.temporal = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        else:
            self.position, self.temporal = None, None
        if cfg.kind == "afa":
            hidden = cfg.afa_hidden or d
            self.afa = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        else:
            self.afa = None
        init = math.log(cfg.logit_scale)
        self.log_scale = nn.Parameter(torch.tensor(init), requires_grad=cfg.learn_logit_scale)

    # ------------------------------------------------------------ encoders
    @property
    def logit_scale(self) -> torch.Tensor:
        """score = logit_scale * <text, video>; clamped at 100 as CLIP does."""
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def encode_text(self, sentence: torch.Tensor) -> torch.Tensor:
        x = sentence.float()
        if self.text_adapter is not None:
            x = x + self.text_adapter(x)
        return F.normalize(x, dim=-1)

    def frame_features(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-frame features after adapter and temporal module, L2-normalised: [B, T, D]."""
        x = frames.float()
        if self.frame_adapter is not None:
            x = x + self.frame_adapter(x)
        if self.temporal is not None:
            t = x.shape[1]
            if t > self.position.shape[0]:
                raise ValueError(f"student was built for {self.position.shape[0]} frames, got {t}")
            x = x + self.temporal(x + self.position[:t], src_key_padding_mask=~mask)
        return F.normalize(x, dim=-1)

    def frame_scores(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """AFA's raw frame scores s [B, T] (padded frames -inf); softmax(s) is what fine teaching supervises."""
        if self.afa is None:
            return None
        return self.afa(feats).squeeze(-1).masked_fill(~mask, float("-inf"))

    def aggregate(self, feats: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor | None):
        """(video vector [B, D] normalised, aggregation weights [B, T] or None)."""
        if scores is None:
            w = mask.float() / mask.sum(1, keepdim=True).clamp(min=1)
            return F.normalize((w[..., None] * feats).sum(1), dim=-1), None
        w = (scores / self.cfg.afa_temperature).softmax(-1)
        return F.normalize((w[..., None] * feats).sum(1), dim=-1), w

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor | None = None):
        """frames [B, T, D], mask [B, T] -> (v [B, D] L2-normalised, AFA weights [B, T] or None)."""
        if mask is None:
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        feats = self.frame_features(frames, mask)
        return self.aggregate(feats, mask, self.frame_scores(feats, mask))

    def frame_weights(self, frames: torch.Tensor, mask: torch.Tensor | None = None,
                      temperature: float | None = None) -> torch.Tensor | None:
        """AFA weights at a given temperature (None: the aggregation temperature; 1.0: what is taught)."""
        if mask is None:
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        scores = self.frame_scores(self.frame_features(frames, mask), mask)
        if scores is None:
            return None
        return (scores / (temperature or self.cfg.afa_temperature)).softmax(-1)

    def forward(self, sentence: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor):
        """Training step view: (logits [B, B] text x video, temperature-1 frame scores [B, T] or None)."""
        t = self.encode_text(sentence)
        feats = self.frame_features(frames, mask)
        scores = self.frame_scores(feats, mask)
        v, _ = self.aggregate(feats, mask, scores)
        return self.logit_scale * t @ v.t(), scores

    @torch.no_grad()
    def similarity(self, sentence: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                   chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Search as it would run: encode all queries and videos once, then one matrix product.
        Returns (logits [Nq, Nv], AFA weights [Nv, T] or None)."""
        dev = self.log_scale.device
        t = torch.cat([self.encode_text(sentence[i:i + chunk].to(dev)) for i in range(0, len(sentence), chunk)])
        vs, ws = [], []
        for i in range(0, len(frames), chunk):
            v, w = self.encode_video(frames[i:i + chunk].to(dev), mask[i:i + chunk].to(dev))
            vs.append(v)
            ws.append(w)
        v = torch.cat(vs)
        w = None if ws[0] is None else torch.cat(ws)
        return (self.logit_scale * t @ v.t()).cpu(), None if w is None else w.cpu()

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Config and weights in one file, written atomically."""
        with atomic_open(path) as f:
            torch.save({"config": asdict(self.cfg), "state_dict": self.state_dict()}, f)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location="cpu") -> "Student":
        try:
            blob = torch.load(path, map_location=map_location, weights_only=True)
            model = cls(StudentConfig(**blob["config"]))
            model.load_state_dict(blob["state_dict"])
        except Exception as e:  # a truncated or foreign file fails in many ways; say which file
            raise ValueError(f"{path}: not a student checkpoint ({e})") from None
        return model


def build_student(cfg: StudentConfig) -> Student:
    return Student(cfg)

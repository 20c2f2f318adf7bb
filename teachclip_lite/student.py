"""The student: CLIP4Clip on cached CLIP features, one vector per video.

Everything here runs on the frozen backbone's projected features (features.py), so
the student's trainable parts are small heads that stand in for CLIP4Clip's
fine-tuning: a residual adapter on frames and on the sentence feature
(zero-initialised, so training starts from plain CLIP), an optional temporal
module and the aggregation. The kinds (`KINDS`):

- "meanP": mean of the L2-normalised frames, normalised again (CLIP4Clip meanP);
- "seqTransf": the same mean after CLIP4Clip's temporal module (`TemporalModule`);
- "afa": Attentional frame-Feature Aggregation (TeachCLIP) with no temporal module;
- "seqTransf_afa": the official TeachCLIP student (`sim_header: seqTransf` + AFA):
  temporal module, then AFA over its output.

AFA, as the official `_loose_similarity` computes it: a per-frame score
s_t = Linear(ReLU(Linear(f_t))) read from the post-temporal, NOT yet normalised
frames; weights w = softmax(s / afa_temperature) (0.1); the frames are L2-normalised
and v = normalise(sum_t w_t f_t). The fine-grained teaching loss supervises
softmax(s) at temperature 1; `frame_scores` hands those raw scores out. The kit masks
padded frames out of the softmax (the official code has none at training time).

`TemporalModule` is CLIP4Clip's seqTransf: frame position embeddings, a transformer of
CLIP's own residual attention blocks (open_clip's `Transformer`: QuickGELU for the
OpenAI weights, no dropout), residual add. As in the official code its blocks and
position embeddings are initialised from the backbone's text transformer
(`temporal_init`): its first `layers` blocks and the first T rows of its position
embedding, when the text width equals the feature width. Blocks the text transformer
lacks (the toy CLIP has 3, the module 4) keep CLIP4Clip's init (normal(0, 0.02)).

Search cost is what makes this the student: the video side is one `dim` vector,
scored against a query by one dot product, exactly CLIP4Clip's cost. Fine-tuning CLIP's blocks with the student, from pixels,
is finetune.py's (`TrainConfig.finetune`).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, Transformer

from .heads import ADAPTERS, mean_pool, residual_head
from .paths import atomic_open
from .query import QUERIES, QueryEncoder

KINDS = ("meanP", "seqTransf", "afa", "seqTransf_afa")
ACTS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


@dataclass
class StudentConfig:
    kind: str = "seqTransf_afa"         # see KINDS; the default is the official TeachCLIP student
    dim: int = 512                      # the backbone's embed_dim
    num_frames: int = 12
    layers: int = 4                     # temporal transformer layers (CLIP4Clip's cross_num_hidden_layers)
    heads: int = 0                      # its attention heads (0: the backbone text transformer's, else dim // 64)
    act: str = ""                       # "quick_gelu" | "gelu" ("": the backbone text transformer's, else quick_gelu)
    afa_temperature: float = 0.1        # softmax temperature of the AFA weights used for aggregation
    afa_hidden: int = 0                 # AFA score MLP width (0: dim)
    adapter: str = "mlp"                # residual heads on frames and text: "none" | "linear" | "mlp" (zero-init)
    query: str = "words"                # the query side (query.py): "words" (a trainable block over the caption's
                                        # tokens, the stand-in for fine-tuning CLIP's text encoder) | "sentence"
    logit_scale: float = 100.0          # initial score scale (CLIP's exp(logit_scale))
    learn_logit_scale: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"student kind {self.kind!r} is not one of {KINDS}")
        if self.adapter not in ADAPTERS:
            raise ValueError(f"student adapter {self.adapter!r} is not one of {ADAPTERS}")
        if self.query not in QUERIES:
            raise ValueError(f"student query {self.query!r} is not one of {QUERIES}")
        if self.act and self.act not in ACTS:
            raise ValueError(f"student act {self.act!r} is not one of {tuple(ACTS)}")

    @property
    def uses_temporal(self) -> bool:
        return self.kind in ("seqTransf", "seqTransf_afa")

    @property
    def uses_afa(self) -> bool:
        return self.kind in ("afa", "seqTransf_afa")


def _clip4clip_init(module: nn.Module) -> None:
    """CLIP4Clip's init_weights: linear weights normal(0, 0.02), biases zero, LayerNorms 1 / 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------ the temporal module

def temporal_init(clip_model: nn.Module, layers: int = 4) -> dict | None:
    """What CLIP4Clip initialises seqTransf from: the text transformer's first blocks and position
    embedding, its heads and activation. None when the text width is not the feature width."""
    text = getattr(clip_model, "transformer", None)
    proj = getattr(clip_model, "text_projection", None)
    if text is None or proj is None or text.width != proj.shape[1]:
        return None
    blocks = text.resblocks[:layers]
    act = "quick_gelu" if isinstance(blocks[0].mlp.gelu, QuickGELU) else "gelu"
    return {"blocks": [{k: v.detach().clone().float() for k, v in b.state_dict().items()} for b in blocks],
            "position": clip_model.positional_embedding.detach().clone().float(),
            "heads": int(blocks[0].attn.num_heads), "act": act}


class TemporalModule(nn.Module):
    """CLIP4Clip's seqTransf: x + Transformer(x + position), padded frames masked out as keys."""

    def __init__(self, dim: int, num_frames: int, layers: int = 4, heads: int | None = None,
                 act: str = "quick_gelu"):
        super().__init__()
        self.heads = heads or max(1, dim // 64)
        self.position = nn.Parameter(torch.zeros(num_frames, dim))
        nn.init.normal_(self.position, std=0.02)
        self.transformer = Transformer(dim, layers, self.heads, act_layer=ACTS[act or "quick_gelu"])
        _clip4clip_init(self.transformer)

    def load_text_init(self, init: dict) -> None:
        """Copy the backbone's text blocks (as many as both have) and the first T position rows."""
        for block, state in zip(self.transformer.resblocks, init["blocks"]):
            block.load_state_dict(state)
        t = min(len(self.position), len(init["position"]))
        with torch.no_grad():
            self.position[:t] = init["position"][:t]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        if t > self.position.shape[0]:
            raise ValueError(f"temporal module was built for {self.position.shape[0]} frames, got {t}")
        # CLIP4Clip's extended mask: -1e6 on padded keys, finite so an all-padded clip cannot give NaN
        bias = (~mask).to(x.dtype)[:, None, :].expand(b, t, t) * -1e6
        bias = bias.repeat_interleave(self.heads, dim=0)
        return x + self.transformer(x + self.position[:t], attn_mask=bias)


class Student(nn.Module):
    def __init__(self, cfg: StudentConfig, init: dict | None = None):
        super().__init__()
        if cfg.uses_temporal and init is not None:   # resolve what the backbone decides, so load() rebuilds it
            cfg = replace(cfg, heads=cfg.heads or init["heads"], act=cfg.act or init["act"])
        self.cfg = cfg
        d = cfg.dim
        self.query = QueryEncoder(d, cfg.query) if cfg.query != "sentence" else None
        self.text_adapter = residual_head(cfg.adapter, d)
        self.frame_adapter = residual_head(cfg.adapter, d)
        self.temporal = TemporalModule(d, cfg.num_frames, cfg.layers, cfg.heads, cfg.act) if cfg.uses_temporal else None
        if self.temporal is not None and init is not None and init["blocks"][0]["ln_1.weight"].shape[0] == d \
                and init["heads"] == self.temporal.heads:
            self.temporal.load_text_init(init)
        if cfg.uses_afa:
            hidden = cfg.afa_hidden or d
            self.afa = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            _clip4clip_init(self.afa)
        else:
            self.afa = None
        init_scale = math.log(cfg.logit_scale)
        self.log_scale = nn.Parameter(torch.tensor(init_scale), requires_grad=cfg.learn_logit_scale)

    # ------------------------------------------------------------ encoders
    @property
    def logit_scale(self) -> torch.Tensor:
        """score = logit_scale * <text, video>; clamped at 100 as CLIP does."""
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    @property
    def needs_words(self) -> bool:
        """True when the query side reads word tokens (`encode_text` then needs words and word_mask)."""
        return self.query is not None

    def encode_text(self, sentence: torch.Tensor, words: torch.Tensor | None = None,
                    word_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = sentence.float()
        if self.query is not None:
            x, _ = self.query(x, None if words is None else words.float(), word_mask)
        if self.text_adapter is not None:
            x = x + self.text_adapter(x)
        return F.normalize(x, dim=-1)

    def frame_features(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-frame features after adapter and temporal module, NOT normalised (what AFA reads): [B, T, D]."""
        x = frames.float()
        if self.frame_adapter is not None:
            x = x + self.frame_adapter(x)
        if self.temporal is not None:
            x = self.temporal(x, mask)
        return x

    def frame_scores(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """AFA's raw frame scores s [B, T] (padded frames -inf); softmax(s) is what fine teaching supervises."""
        if self.afa is None:
            return None
        return self.afa(feats).squeeze(-1).masked_fill(~mask, float("-inf"))

    def aggregate(self, feats: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor | None):
        """(video vector [B, D] normalised, aggregation weights [B, T] or None); frames are
        L2-normalised before they are pooled, as in CLIP4Clip and TeachCLIP."""
        feats = F.normalize(feats, dim=-1)
        if scores is None:
            return mean_pool(feats, mask), None
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

    def forward(self, sentence: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                words: torch.Tensor | None = None, word_mask: torch.Tensor | None = None):
        """Training step view: (query vectors [B, D], video vectors [B, D], temperature-1 frame scores [B, T]
        or None); the batch's logits are logit_scale * t @ v.T (train.py gathers t and v over ranks first)."""
        t = self.encode_text(sentence, words, word_mask)
        feats = self.frame_features(frames, mask)
        scores = self.frame_scores(feats, mask)
        v, _ = self.aggregate(feats, mask, scores)
        return t, v, scores

    @torch.no_grad()
    def similarity(self, sentence: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                   chunk: int = 4096, words: torch.Tensor | None = None,
                   word_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Search as it would run: encode all queries and videos once, then one matrix product.
        Returns (logits [Nq, Nv], AFA weights [Nv, T] or None)."""
        dev = self.log_scale.device
        t = torch.cat([self.encode_text(*_text_chunk(sentence, words, word_mask, slice(i, i + chunk), dev))
                       for i in range(0, len(sentence), chunk)])
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


def _text_chunk(sentence, words, word_mask, rows: slice, dev):
    """One chunk of queries on `dev`, all-padding word columns dropped (the query block's cost grows with L)."""
    if words is None or word_mask is None:
        return sentence[rows].to(dev), None, None
    n = max(1, int(word_mask[rows].sum(1).max()))
    return sentence[rows].to(dev), words[rows, :n].to(dev), word_mask[rows, :n].to(dev)


def build_student(cfg: StudentConfig, init: dict | None = None) -> Student:
    """A student; `init` (features.FeatureSet.temporal_init) seeds its temporal module from the backbone."""
    return Student(cfg, init)

"""Fine-grained teachers: accurate, but they keep frames (or tokens) and score pairs with a network.

Three families, each small and trained on cached features with symmetric InfoNCE:

- X-Pool style (`XPoolTeacher`): the caption queries the frames; attention pooling
  gives a text-conditioned video vector per (caption, video) pair.
- X-CLIP style (`XClipTeacher`): multi-grained contrast; video-sentence, video-word,
  frame-sentence and frame-word similarities, the fine-grained ones reduced by
  attention over the similarity matrices (softmax-weighted sums with learned
  temperatures); the score is their mean.
- TS2-Net style (`TS2NetTeacher`): over patch tokens, token shift (a quarter of the
  channels come from the previous frame, a quarter from the next) and token
  selection (a scorer keeps the top-k patches per frame), pooled into each frame's
  feature; the caption then pools the frames by attention and is compared with the result.

Every teacher exposes `similarity(texts, videos) -> [Bt, Bv]` logits and
`frame_relevance(texts, videos) -> [B, T]`, the softmax over valid frames of the
text-to-frame relevance of caption i with video i: what the student's AFA is
taught to follow. Pair scoring is vectorised over the Bt x Bv batch and chunked
when it is large. All projection heads are residual and zero-initialised, and the
attention temperatures start at 0.1: at step 0 each teacher is a sensible
text-conditioned reading of plain CLIP features and training only refines it.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import TextFeatures, VideoFeatures
from .paths import atomic_open

TEACHERS = ("xpool", "xclip", "ts2net")
NEG = -1e4  # masked logit; finite so an all-masked row cannot turn into NaN


def _residual_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _input_head(kind: str, dim: int) -> nn.Module:
    """Residual head on an input feature (the student's choice of adapters, student.py)."""
    if kind == "linear":
        return _residual_linear(dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), _zero_out(2 * dim, dim))
    raise ValueError(f"teacher adapter {kind!r} is not 'linear' or 'mlp'")


def _zero_out(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _adapt(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    x = x.float()
    return F.normalize(x + layer(x), dim=-1)


def _log_temp(value: float) -> nn.Parameter:
    return nn.Parameter(torch.tensor(math.log(value)))


def _soft_pool(sims: torch.Tensor, mask: torch.Tensor, log_temp: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """sum_k softmax_k(sims / temp) * sims over axis `dim` (masked): a learned soft maximum.

    Written out (max-shift, exp, two sums) rather than with `softmax`: on the short
    axes here (T = 12 frames, ~16 words) that is three times faster on CPU, and
    it reduces over any axis without a transpose.
    """
    z = sims * (1 / log_temp.exp()) + torch.zeros(mask.shape, device=sims.device).masked_fill(~mask, NEG)
    e = (z - z.amax(dim, keepdim=True).detach()).exp()
    return (e * sims).sum(dim) / e.sum(dim)


class Teacher(nn.Module):
    """Base class: subclasses define `encode_texts`, `encode_videos`, `pair_sims` and `pair_relevance`."""

    name = "teacher"
    needs_patches = False

    def __init__(self, dim: int, num_frames: int = 12, logit_scale: float = 100.0):
        super().__init__()
        self.dim, self.num_frames = dim, num_frames
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    # subclasses -------------------------------------------------------------
    def encode_texts(self, sentence, words, word_mask) -> dict:
        raise NotImplementedError

    def encode_videos(self, frames, mask, patches=None) -> dict:
        raise NotImplementedError

    def pair_sims(self, t: dict, v: dict) -> torch.Tensor:
        """cosine-like similarities [Bt, Bv] of every text with every video."""
        raise NotImplementedError

    def pair_relevance(self, t: dict, v: dict) -> torch.Tensor:
        """[B, T] frame distribution of text i over the frames of video i."""
        raise NotImplementedError

    def bytes_per_video(self, num_frames: int, dim: int, num_patches: int = 0) -> int:
        """What the index must keep per video for this teacher to score a query, in float32 bytes."""
        return num_frames * dim * 4

    # tensor-level API used by the trainer ------------------------------------
    def logits(self, sentence, words, word_mask, frames, mask, patches=None) -> torch.Tensor:
        t = self.encode_texts(sentence, words, word_mask)
        v = self.encode_videos(frames, mask, patches)
        return self.logit_scale * self.pair_sims(t, v)

    def relevance(self, sentence, words, word_mask, frames, mask, patches=None) -> torch.Tensor:
        t = self.encode_texts(sentence, words, word_mask)
        v = self.encode_videos(frames, mask, patches)
        return self.pair_relevance(t, v)

    # feature-level API --------------------------------------------------------
    def _device(self):
        return self.log_scale.device

    def _text_args(self, texts: TextFeatures, rows: slice):
        d = self._device()
        n = max(1, int(texts.word_mask[rows].sum(1).max()))   # drop all-padding word columns: cost grows with L
        return texts.sentence[rows].to(d), texts.words[rows, :n].to(d), texts.word_mask[rows, :n].to(d)

    def _video_args(self, videos: VideoFeatures, rows: slice):
        d = self._device()
        patches = None
        if self.needs_patches:
            if videos.patches is None:
                raise ValueError(f"teacher {self.name!r} needs patch tokens; these features have none "
                                 f"(build the cache with patches=True)")
            patches = videos.patches[rows].to(d)
        return videos.frames[rows].to(d), videos.mask[rows].to(d), patches

    @torch.no_grad()
    def similarity(self, texts: TextFeatures, videos: VideoFeatures, chunk: int = 256) -> torch.Tensor:
        """Logits [len(texts), len(videos)], computed in chunk x chunk blocks (memory stays bounded)."""
        was = self.training
        self.eval()
        vstates = [self.encode_videos(*self._video_args(videos, slice(j, j + chunk)))
                   for j in range(0, len(videos), chunk)]
        rows = []
        for i in range(0, len(texts), chunk):
            t = self.encode_texts(*self._text_args(texts, slice(i, i + chunk)))
            rows.append(torch.cat([self.pair_sims(t, v) for v in vstates], 1))
        self.train(was)
        return (self.logit_scale * torch.cat(rows)).cpu()

    @torch.no_grad()
    def frame_relevance(self, texts: TextFeatures, videos: VideoFeatures, chunk: int = 1024) -> torch.Tensor:
        """[B, T]: row i is caption i's relevance over the frames of video i (len(texts) == len(videos))."""
        if len(texts) != len(videos):
            raise ValueError(f"frame_relevance pairs caption i with video i: got {len(texts)} captions "
                             f"and {len(videos)} videos")
        was = self.training
        self.eval()
        out = []
        for i in range(0, len(texts), chunk):
            rows = slice(i, i + chunk)
            out.append(self.pair_relevance(self.encode_texts(*self._text_args(texts, rows)),
                                           self.encode_videos(*self._video_args(videos, rows))))
        self.train(was)
        return torch.cat(out).cpu()


class XPoolTeacher(Teacher):
    """The caption is the query of an attention over the video's frames (X-Pool, Gorti et al. 2022).

    q = Wq t, k_f = Wk f, attention a = softmax_f(<q, k_f> / temp); the pooled video
    sum_f a_f (f + Wv f) is compared with the caption by cosine. The output projection
    is linear, so it is folded into the per-frame values: the pair cost stays
    O(Bt * Bv * T * D).
    """

    name = "xpool"

    def __init__(self, dim: int, num_frames: int = 12, logit_scale: float = 100.0, temperature: float = 0.1,
                 adapter: str = "mlp"):
        super().__init__(dim, num_frames, logit_scale)
        self.text = _input_head(adapter, dim)
        self.frame = _input_head(adapter, dim)
        self.query = _residual_linear(dim)
        self.key = _residual_linear(dim)
        self.value = _residual_linear(dim)
        self.log_temp = _log_temp(temperature)

    def encode_texts(self, sentence, words, word_mask):
        t = _adapt(sentence, self.text)
        return {"t": t, "q": F.normalize(t + self.query(t), dim=-1)}

    def encode_videos(self, frames, mask, patches=None):
        f = _adapt(frames, self.frame)
        return {"k": F.normalize(f + self.key(f), dim=-1), "v": f + self.value(f), "mask": mask}

    def _attention(self, q, k, mask):  # q [Bt, D], k [Bv, T, D] -> [Bt, Bv, T]
        return (torch.einsum("id,jtd->ijt", q, k) / self.log_temp.exp()).masked_fill(~mask[None], NEG).softmax(-1)

    def pair_sims(self, t, v):
        a = self._attention(t["q"], v["k"], v["mask"])
        pooled = F.normalize(torch.einsum("ijt,jtd->ijd", a, v["v"]), dim=-1)
        return torch.einsum("id,ijd->ij", t["t"], pooled)

    def pair_relevance(self, t, v):
        logits = torch.einsum("bd,btd->bt", t["q"], v["k"]) / self.log_temp.exp()
        return logits.masked_fill(~v["mask"], NEG).softmax(-1)


class XClipTeacher(Teacher):
    """Multi-grained contrast (X-CLIP, Ma et al. 2022): the mean of four similarities.

    video-sentence (cosine of mean frame and sentence), video-word (soft max over
    words), frame-sentence (soft max over frames) and frame-word (attention over the
    word x frame similarity matrix, frames then words and words then frames,
    averaged). Frame relevance = softmax over frames of the frame-sentence
    similarities at their learned temperature.
    """

    name = "xclip"

    def __init__(self, dim: int, num_frames: int = 12, logit_scale: float = 100.0, temperature: float = 0.1,
                 adapter: str = "mlp"):
        super().__init__(dim, num_frames, logit_scale)
        self.sentence = _input_head(adapter, dim)
        self.word = _input_head(adapter, dim)
        self.frame = _input_head(adapter, dim)
        self.t_sf, self.t_wv = _log_temp(temperature), _log_temp(temperature)
        self.t_wf_f, self.t_wf_w = _log_temp(temperature), _log_temp(temperature)  # frames within a word, words
        self.t_fw_w, self.t_fw_f = _log_temp(temperature), _log_temp(temperature)  # words within a frame, frames

    def bytes_per_video(self, num_frames: int, dim: int, num_patches: int = 0) -> int:
        return (num_frames + 1) * dim * 4  # the frames and the video-level vector

    def encode_texts(self, sentence, words, word_mask):
        return {"s": _adapt(sentence, self.sentence), "w": _adapt(words, self.word), "wm": word_mask}

    def encode_videos(self, frames, mask, patches=None):
        f = _adapt(frames, self.frame)
        m = mask.float()[..., None]
        return {"f": f, "v": F.normalize((f * m).sum(1) / m.sum(1).clamp(min=1), dim=-1), "mask": mask}

    def pair_sims(self, t, v):
        s, w, wm, f, vid, fm = t["s"], t["w"], t["wm"], v["f"], v["v"], v["mask"]
        sv = s @ vid.t()                                                    # [Bt, Bv]
        wv = _soft_pool(torch.einsum("ild,jd->ijl", w, vid), wm[:, None], self.t_wv)
        sf = _soft_pool(torch.einsum("id,jtd->ijt", s, f), fm[None], self.t_sf)
        wf = torch.einsum("ild,jtd->ijlt", w, f)                           # [Bt, Bv, L, T]
        pair_fm, pair_wm = fm[None, :, None, :], wm[:, None, :, None]
        per_word = _soft_pool(wf, pair_fm, self.t_wf_f)                    # [Bt, Bv, L]
        a = _soft_pool(per_word, wm[:, None], self.t_wf_w)
        per_frame = _soft_pool(wf, pair_wm, self.t_fw_w, dim=-2)              # [Bt, Bv, T]
        b = _soft_pool(per_frame, fm[None], self.t_fw_f)
        return (sv + wv + sf + (a + b) / 2) / 4

    def pair_relevance(self, t, v):
        logits = torch.einsum("bd,btd->bt", t["s"], v["f"]) / self.t_sf.exp()
        return logits.masked_fill(~v["mask"], NEG).softmax(-1)


class TS2NetTeacher(Teacher):
    """Token shift and token selection over patch tokens (TS2-Net, Liu et al. 2022).

    Patches [B, T, P, D]: shift a quarter of the channels from the previous frame and
    a quarter from the next (zeros at the ends), score each patch with a small MLP,
    keep the top-k per frame, pool them with the softmax of their scores (the
    gradient reaches the scorer through those weights) and add the result to the
    frame feature through a zero-initialised projection. The caption then pools the
    refined frames (softmax of caption-frame cosines) and is compared with the pooled
    vector: a query naming two events needs both in the pool, not just one frame. Token shift
    and selection do not depend on the text, so the index keeps one refined vector
    per frame; the patches are needed only when a video is encoded.
    """

    name = "ts2net"
    needs_patches = True

    def __init__(self, dim: int, num_frames: int = 12, logit_scale: float = 100.0, temperature: float = 0.1,
                 top_k: int = 4, shift_frac: float = 0.25, adapter: str = "mlp"):
        super().__init__(dim, num_frames, logit_scale)
        self.top_k, self.shift = top_k, int(dim * shift_frac)
        self.text = _input_head(adapter, dim)
        self.frame = _input_head(adapter, dim)
        self.scorer = nn.Sequential(nn.Linear(2 * dim, dim // 4), nn.GELU(), nn.Linear(dim // 4, 1))
        self.tokens = _residual_linear(dim)
        self.log_temp = _log_temp(temperature)

    def token_shift(self, p: torch.Tensor) -> torch.Tensor:
        """[B, T, P, D]: channels [0, s) from frame t-1, [s, 2s) from frame t+1."""
        s = self.shift
        out = p.clone()
        out[:, 1:, :, :s] = p[:, :-1, :, :s]
        out[:, :1, :, :s] = 0
        out[:, :-1, :, s:2 * s] = p[:, 1:, :, s:2 * s]
        out[:, -1:, :, s:2 * s] = 0
        return out

    def encode_texts(self, sentence, words, word_mask):
        return {"t": _adapt(sentence, self.text)}

    def encode_videos(self, frames, mask, patches=None):
        if patches is None:
            raise ValueError("TS2-Net teacher needs patch tokens")
        f = _adapt(frames, self.frame)                                     # [B, T, D]
        p = F.normalize(self.token_shift(patches.float()), dim=-1)         # [B, T, P, D]
        ctx = f[:, :, None].expand_as(p)
        score = self.scorer(torch.cat([p, ctx], -1)).squeeze(-1)           # [B, T, P]
        k = min(self.top_k, p.shape[2])
        top, idx = score.topk(k, dim=-1)
        picked = p.gather(2, idx[..., None].expand(-1, -1, -1, p.shape[-1]))  # [B, T, k, D]
        pooled = (top.softmax(-1)[..., None] * picked).sum(2)
        return {"f": F.normalize(f + self.tokens(pooled), dim=-1), "mask": mask}

    def pair_sims(self, t, v):
        a = (torch.einsum("id,jtd->ijt", t["t"], v["f"]) / self.log_temp.exp()).masked_fill(~v["mask"][None], NEG)
        pooled = F.normalize(torch.einsum("ijt,jtd->ijd", a.softmax(-1), v["f"]), dim=-1)
        return torch.einsum("id,ijd->ij", t["t"], pooled)

    def pair_relevance(self, t, v):
        logits = torch.einsum("bd,btd->bt", t["t"], v["f"]) / self.log_temp.exp()
        return logits.masked_fill(~v["mask"], NEG).softmax(-1)


class EnsembleTeacher(Teacher):
    """Several trained teachers as one: mean of their logits and of their frame relevances."""

    name = "ensemble"

    def __init__(self, members: list[Teacher]):
        super().__init__(members[0].dim, members[0].num_frames)
        self.members = nn.ModuleList(members)
        self.needs_patches = any(m.needs_patches for m in members)

    def bytes_per_video(self, num_frames: int, dim: int, num_patches: int = 0) -> int:
        return sum(m.bytes_per_video(num_frames, dim, num_patches) for m in self.members)

    def logits(self, *args, **kw):
        return torch.stack([m.logits(*args, **kw) for m in self.members]).mean(0)

    def relevance(self, *args, **kw):
        return torch.stack([m.relevance(*args, **kw) for m in self.members]).mean(0)

    def similarity(self, texts, videos, chunk: int = 256):
        return torch.stack([m.similarity(texts, videos, chunk) for m in self.members]).mean(0)

    def frame_relevance(self, texts, videos, chunk: int = 1024):
        return torch.stack([m.frame_relevance(texts, videos, chunk) for m in self.members]).mean(0)


_CLASSES = {"xpool": XPoolTeacher, "xclip": XClipTeacher, "ts2net": TS2NetTeacher}


def build_teacher(name: str, dim: int, num_frames: int = 12, **kw) -> Teacher:
    if name not in _CLASSES:
        raise ValueError(f"unknown teacher {name!r}; choose from {TEACHERS}")
    return _CLASSES[name](dim, num_frames, **kw)


def save_teacher(teacher: Teacher, path: str | os.PathLike, **build_kw) -> None:
    """Name, sizes and weights in one file, written atomically."""
    with atomic_open(path) as f:
        torch.save({"name": teacher.name, "dim": teacher.dim, "num_frames": teacher.num_frames,
                    "kwargs": build_kw, "state_dict": teacher.state_dict()}, f)


def load_teacher(path: str | os.PathLike, map_location="cpu") -> Teacher:
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
        t = build_teacher(blob["name"], blob["dim"], blob["num_frames"], **blob["kwargs"])
        t.load_state_dict(blob["state_dict"])
    except Exception as e:  # a truncated or foreign file fails in many ways; say which file
        raise ValueError(f"{path}: not a teacher checkpoint ({e})") from None
    return t

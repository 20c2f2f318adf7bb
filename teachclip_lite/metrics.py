"""How good is a retrieval, and where does the student look.

`retrieval_metrics` turns a query x video similarity matrix into the numbers the
field reports, computed as CLIP4Clip's metrics.py does (the code TeachCLIP evaluates
with): R@1/5/10 (percentages), median rank (MdR), mean rank (MnR), for text-to-video
and video-to-text, plus SumR (text-to-video R@1 + R@5 + R@10, as in the TeachCLIP paper).

- One caption per video (MSR-VTT 1k-A): `compute_metrics` on the matrix and on its
  transpose; MdR is numpy's median (the mean of the two middle ranks).
- Several captions per video (MSVD, VATEX, ...): text-to-video ranks each caption's
  video as usual, with MdR as `tensor_text_to_video_metrics` takes it (torch.median:
  the lower middle rank); video-to-text scores each video's group of captions by its
  best caption (`tensor_video_to_text_sim`) and ranks the groups (`compute_metrics`,
  numpy's median).

One departure: ties count against the correct item (a model that scores everything
equally ranks the right video last, not first); CLIP4Clip's sort-and-search picks
the first equal position instead (and counts a row twice). Real-valued scores
practically never tie, and then the two agree (tests/test_metrics.py).

`attention_hit` uses the toy world's ground truth: the share of AFA weight that
falls on the native frames a query's caption describes (`attention_hit`) or on
frames any caption of the video could describe, i.e. any event (`attention_hit_any`).
`uniform_weights` gives the reference: what spreading weight evenly would score.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def _ranks(sim: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-based rank of sim[i, target[i]] in row i; ties count as ranked above the target."""
    correct = sim.gather(1, target[:, None])
    return (sim >= correct).sum(1)  # counts the target itself, so this is 1-based


def _summarise(ranks: torch.Tensor, prefix: str, lower_median: bool = False) -> dict[str, float]:
    r = ranks.double()
    out = {f"{prefix}_r{k}": float((r <= k).double().mean() * 100) for k in (1, 5, 10)}
    # numpy's median (CLIP4Clip's compute_metrics), or torch.median's lower middle (tensor_text_to_video_metrics)
    out[f"{prefix}_mdr"] = float(r.median() if lower_median else torch.quantile(r, 0.5))
    out[f"{prefix}_mnr"] = float(r.mean())
    return out


def t2v_ranks(sim: torch.Tensor, query_video: torch.Tensor) -> torch.Tensor:
    """Rank of each query's own video among all videos."""
    return _ranks(sim.float(), torch.as_tensor(query_video, dtype=torch.long))


def v2t_ranks(sim: torch.Tensor, query_video: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each video with captions, the rank of its own caption group among all groups, a group
    scored by its best caption (CLIP4Clip's tensor_video_to_text_sim, then compute_metrics).

    With one caption per video this is the rank of the video's caption among all captions.
    Videos without a caption are skipped; columns are taken `chunk` at a time (memory Nv x chunk).
    """
    sim = sim.float()
    qv = torch.as_tensor(query_video, dtype=torch.long)
    nv = sim.shape[1]
    has = torch.zeros(nv, dtype=torch.bool)
    has[qv] = True
    ranks = []
    for j in range(0, nv, chunk):
        cols = sim[:, j:j + chunk]                                                  # [Nq, c]
        group = torch.full((nv, cols.shape[1]), float("-inf")).scatter_reduce(   # [Nv groups, c]
            0, qv[:, None].expand_as(cols), cols, reduce="amax")
        own = group[torch.arange(j, j + cols.shape[1]), torch.arange(cols.shape[1])]
        ranks.append((group >= own[None]).sum(0))
    return torch.cat(ranks)[has]


def one_caption_per_video(query_video: torch.Tensor, num_videos: int) -> bool:
    """True when every video has exactly one caption (CLIP4Clip's single-sentence evaluation)."""
    qv = torch.as_tensor(query_video, dtype=torch.long)
    return len(qv) == num_videos and bool((torch.bincount(qv, minlength=num_videos) == 1).all())


def retrieval_metrics(sim: torch.Tensor, query_video: torch.Tensor) -> dict[str, float]:
    """t2v_r1/r5/r10/mdr/mnr, sumr and v2t_r1/r5/r10/mdr/mnr of a [Nq, Nv] similarity matrix.

    `query_video[i]` is the column of query i's video; one or many queries per video.
    """
    sim = torch.as_tensor(sim)
    if sim.ndim != 2 or len(query_video) != sim.shape[0]:
        raise ValueError(f"retrieval_metrics: sim {tuple(sim.shape)} does not match {len(query_video)} queries")
    multi = not one_caption_per_video(query_video, sim.shape[1])
    out = _summarise(t2v_ranks(sim, query_video), "t2v", lower_median=multi)
    out["sumr"] = out["t2v_r1"] + out["t2v_r5"] + out["t2v_r10"]
    out.update(_summarise(v2t_ranks(sim, query_video), "v2t"))
    return out


def uniform_weights(frame_indices: torch.Tensor) -> torch.Tensor:
    """Equal weight on every real (non-padded, index >= 0) sampled frame."""
    valid = torch.as_tensor(frame_indices) >= 0
    return valid.float() / valid.sum(1, keepdim=True).clamp(min=1)


def attention_hit(weights: torch.Tensor | None, frame_indices: torch.Tensor,
                  described: Sequence[set[int]]) -> float:
    """Mean over queries of the weight that lands on described native frames.

    weights [Nq, T] (rows sum to 1; None = uniform), frame_indices [Nq, T] the native
    frame index of each sampled frame (-1 = padding), described[q] the native frames
    query q's caption talks about. Returns a share in [0, 1].
    """
    idx = torch.as_tensor(frame_indices, dtype=torch.long)
    w = uniform_weights(idx) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != idx.shape or len(described) != idx.shape[0]:
        raise ValueError(f"attention_hit: weights {tuple(w.shape)}, indices {tuple(idx.shape)} and "
                         f"{len(described)} described sets do not match")
    hit = torch.tensor([[int(f) in d for f in row] for row, d in zip(idx.tolist(), described)], dtype=torch.bool)
    hit &= idx >= 0
    return float((w * hit).sum(1).mean())


def attention_hit_any(weights: torch.Tensor | None, frame_indices: torch.Tensor,
                      event_frames: Sequence[set[int]]) -> float:
    """Share of weight on frames that any caption could describe (the clip's event frames)."""
    return attention_hit(weights, frame_indices, event_frames)

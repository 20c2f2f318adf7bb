"""How good is a retrieval, and where does the student look.

`retrieval_metrics` turns a query x video similarity matrix into the numbers the
field reports: R@1/5/10, median rank (MdR), mean rank (MnR) and SumR (text-to-video
R@1 + R@5 + R@10, as in the TeachCLIP paper), for text-to-video and video-to-text.
Recalls are percentages. Ties are counted against the correct item (a model that
scores everything equally ranks the right video last, not first).

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


def _summarise(ranks: torch.Tensor, prefix: str) -> dict[str, float]:
    r = ranks.double()
    out = {f"{prefix}_r{k}": float((r <= k).double().mean() * 100) for k in (1, 5, 10)}
    out[f"{prefix}_mdr"] = float(torch.quantile(r, 0.5))  # numpy's median (torch.median takes the lower middle)
    out[f"{prefix}_mnr"] = float(r.mean())
    return out


def t2v_ranks(sim: torch.Tensor, query_video: torch.Tensor) -> torch.Tensor:
    """Rank of each query's own video among all videos."""
    return _ranks(sim.float(), torch.as_tensor(query_video, dtype=torch.long))


def v2t_ranks(sim: torch.Tensor, query_video: torch.Tensor) -> torch.Tensor:
    """For each video, the best rank among its captions when the video queries all captions.

    With several captions per video any of them counts as a hit (the usual MSR-VTT /
    CLIP4Clip convention); videos without a caption are skipped.
    """
    sim = sim.float().t()                       # [Nv, Nq]
    qv = torch.as_tensor(query_video, dtype=torch.long)
    best = torch.full((sim.shape[0],), float("inf"), dtype=torch.float64)
    own = sim[qv, torch.arange(len(qv))]        # [Nq] score of caption q in its video's row
    rank_q = torch.cat([(sim[qv[i:i + 1024]] >= own[i:i + 1024, None]).sum(1)  # chunked: Nq x Nq can be big
                        for i in range(0, len(qv), 1024)]).double()
    best = best.scatter_reduce(0, qv, rank_q, reduce="amin")
    return best[torch.isfinite(best)]


def retrieval_metrics(sim: torch.Tensor, query_video: torch.Tensor) -> dict[str, float]:
    """t2v_r1/r5/r10/mdr/mnr, sumr and v2t_r1/r5/r10/mdr/mnr of a [Nq, Nv] similarity matrix.

    `query_video[i]` is the column of query i's video; one or many queries per video.
    """
    sim = torch.as_tensor(sim)
    if sim.ndim != 2 or len(query_video) != sim.shape[0]:
        raise ValueError(f"retrieval_metrics: sim {tuple(sim.shape)} does not match {len(query_video)} queries")
    out = _summarise(t2v_ranks(sim, query_video), "t2v")
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

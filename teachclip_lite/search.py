"""Search as a service would run it: `search_index`, what `teachclip-lite search` runs over an index folder,
and, over the same corpus two ways:

- the student: one vector per video in an `index.Index`; a query is one text encoding, the student's
  text head and one matrix product with a top-k;
- a teacher: its video side encoded once (frames, per video), then per query its text side and the
  pair scoring network against every stored video, chunk by chunk (`teacher_scores`).

The bench times both at the paper's shapes with the same functions; lesson 04 searches the toy test corpus.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def teacher_scores(teacher, text: tuple, stored: dict, chunk: int = 1024) -> torch.Tensor:
    """[Q, N] pair scores of Q queries (`teacher.encode_texts` inputs) against N stored videos
    (`teacher.encode_videos` output), chunk by chunk: memory stays bounded at any N."""
    t = teacher.encode_texts(*text)
    n = len(stored["mask"])
    return torch.cat([teacher.pair_sims(t, {key: v[s:s + chunk] for key, v in stored.items()})
                      for s in range(0, n, chunk)], 1)


def teacher_search(teacher, text: tuple, stored: dict, k: int, chunk: int = 1024):
    """One query's top-k for a teacher: text side once, pair scores chunk by chunk."""
    scores = teacher_scores(teacher, text, stored, chunk)
    return scores.topk(min(k, scores.shape[1]), dim=1)


class SearchEngine:
    """A corpus searched by the student's index and by a teacher (or an ensemble: its members' logits
    averaged), from the same query text; `search` returns both top-k lists and their latency."""

    def __init__(self, backbone, student, teacher, videos, student_name: str = "teachclip",
                 teacher_name: str = "teacher"):
        from .index import Index

        self.backbone, self.student, self.videos = backbone, student.eval(), videos
        self.members = list(getattr(teacher, "members", [teacher]))
        self.student_name, self.teacher_name = student_name, teacher_name
        dev = _device(student)
        with torch.no_grad():
            v, _ = student.encode_video(videos.frames.to(dev), videos.mask.to(dev))
            self.index = Index(v.float().cpu().numpy(), list(videos.ids), {"model": student_name})
            self.stored = []
            for m in self.members:
                m.eval()
                d = _device(m)
                p = videos.patches.to(d) if m.needs_patches else None
                self.stored.append(m.encode_videos(videos.frames.to(d), videos.mask.to(d), p))

    def search(self, query: str, k: int = 5, teacher: bool = True) -> dict:
        """Both top-k lists for one query text (`teacher=False`: the student's only, the teacher's list empty)."""
        k = max(1, min(int(k), len(self.videos)))
        t0 = time.perf_counter()
        sentence, words, wmask = self.backbone.encode_text([query])
        encode_ms = 1e3 * (time.perf_counter() - t0)
        with torch.no_grad():
            t0 = time.perf_counter()
            dev = _device(self.student)
            q = self.student.encode_text(sentence.to(dev), words.to(dev), wmask.to(dev))
            scores, rows = self.index.search(q.float().cpu().numpy(), k)
            student_ms = 1e3 * (time.perf_counter() - t0)
            t0 = time.perf_counter()
            if not teacher:
                return {"query": query, "k": k, "encode_ms": encode_ms, "student_ms": student_ms,
                        "student": self._hits(np.asarray(scores)[0], np.asarray(rows)[0],
                                              float(self.student.logit_scale.detach())), "teacher": []}
            sims = torch.stack([(m.logit_scale * teacher_scores(m, tuple(x.to(_device(m)) for x in
                                                                          (sentence, words, wmask)), s)).cpu()
                                for m, s in zip(self.members, self.stored)]).mean(0)[0]
            tscores, trows = sims.topk(k)
            teacher_ms = 1e3 * (time.perf_counter() - t0)
        scale = float(self.student.logit_scale.detach())   # the index holds unit vectors: report logits, like the teacher
        return {"query": query, "k": k, "encode_ms": encode_ms,
                "student": self._hits(np.asarray(scores)[0], np.asarray(rows)[0], scale), "student_ms": student_ms,
                "student_name": self.student_name, "student_how": f"index of {len(self.index)} vectors",
                "teacher": self._hits(tscores.numpy(), trows.numpy(), 1.0), "teacher_ms": teacher_ms,
                "teacher_name": self.teacher_name,
                "teacher_how": f"pair scoring against {len(self.videos)} stored videos"}

    def _hits(self, scores, rows, scale: float) -> list[dict]:
        return [{"rank": i + 1, "video": self.videos.ids[int(r)], "score": float(s) * scale}
                for i, (s, r) in enumerate(zip(scores, rows))]


def _device(model):
    return next(model.parameters()).device


def expected_videos(features) -> dict[str, str]:
    """caption -> the video it describes (one caption per video, as in the test split)."""
    return {c: features.videos.ids[int(v)] for c, v in zip(features.texts.captions, features.texts.video.tolist())}


def latency(found: list[dict]) -> dict[str, float]:
    """Mean ms per query: the text encoder (shared), the student's search, the teacher's."""
    return {"text encoder": float(np.mean([f["encode_ms"] for f in found])),
            "student": float(np.mean([f["student_ms"] for f in found])),
            "teacher": float(np.mean([f["teacher_ms"] for f in found]))}


def search_checks(found: list[dict], expected: dict[str, str]) -> dict:
    """Did every search return k results, and how often is the expected video among them (per side)?"""
    known = [f for f in found if f["query"] in expected]
    out = {"queries": len(found), "all_returned_k": all(len(f["student"]) == f["k"] == len(f["teacher"]) for f in found),
           "with_expected_video": len(known)}
    for side in ("student", "teacher"):
        ranks = [next((h["rank"] for h in f[side] if h["video"] == expected[f["query"]]), None) for f in known]
        out[f"{side}_found"] = sum(r is not None for r in ranks)
        out[f"{side}_ranks"] = ranks
    return out


# ---------------------------------------------------------------------- an index folder

def search_index(index_dir: str | os.PathLike, query: str, k: int = 5, encoder=None,
                 precision: str | None = None) -> list[dict]:
    """The k best videos for a text query: [{"rank", "score" (cosine), "video"}], best first.

    Equal scores are ordered by path (the index's row order), so results are deterministic.
    """
    from .encoder import encoder_from_spec
    from .errors import PROG, UserError, warn
    from .index import Index, IndexFormatError
    from .ingest import INDEX_FORMAT, JOURNAL

    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise UserError(f"{index_dir}: no such folder (build an index with `{PROG} index VIDEO_DIR --out "
                       f"{index_dir}`)")
    try:
        index = Index.load(index_dir)
    except IndexFormatError as e:
        if not (index_dir / "CURRENT").exists():
            if (index_dir / JOURNAL).is_dir():
                raise UserError(f"{index_dir}: no complete index yet (an `index` run is in progress or was "
                               f"interrupted); let it finish, or run the same `{PROG} index` command again") from None
            raise UserError(f"{index_dir}: not an index folder (build one with `{PROG} index VIDEO_DIR --out "
                           f"{index_dir}`)") from None
        raise UserError(f"{e}; re-run `{PROG} index` to rebuild it") from None
    if index.config.get("kind") != INDEX_FORMAT:
        raise UserError(f"{index_dir}: not a video index written by `{PROG} index`")
    if not query.strip():
        raise UserError("the query is empty; describe what you look for, e.g. \"a person opens a door\"")
    if k < 1:
        raise UserError(f"-k must be at least 1 (got {k})")
    encoder = encoder or encoder_from_spec(index.config["encoder"], precision)
    n_tok, ctx = encoder.backbone.count_tokens(query), encoder.backbone.context_length
    if n_tok > ctx:
        warn(f"the query is {n_tok} tokens long; only the first {ctx} (the tokenizer's context) are used")
    q = encoder.text_vectors([query])
    hits = index.search_ids(q, k)[0]
    return [{"rank": i + 1, "score": round(float(s), 6), "video": v} for i, (v, s) in enumerate(hits)]

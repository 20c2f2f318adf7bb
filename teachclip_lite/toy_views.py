"""Views of the toy world for figures and lessons: its splits, a clip's captions and phrases, sibling
pairs, and which sampled frames a query describes (the ground truth that `attention_hit` scores).
The generator is toy.py; this file only reads what it wrote (`toy.load_truth`)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def toy_world_summary(truth: dict) -> list[dict]:
    """Per split: clips, captions, clips that have a colour-swapped sibling, mean length in frames."""
    rows = []
    for split in ("train", "val", "test"):
        recs = [r for r in truth.values() if r["split"] == split]
        rows.append({"split": split, "videos": len(recs), "captions": sum(len(r["captions"]) for r in recs),
                     "with_sibling": sum(1 for r in recs if r["sibling"]),
                     "frames": float(np.mean([r["num_frames"] for r in recs])) if recs else None})
    return rows


def example_clips(truth: dict, split: str = "test", n: int = 2) -> list[dict]:
    """The first sibling pair of a split, then other clips: n records in all."""
    recs = [r for r in truth.values() if r["split"] == split]
    pair = next(([r, truth[r["sibling"]]] for r in recs if r["sibling"] in truth), [])
    rest = [r for r in recs if r not in pair]
    return (pair + rest)[:n]


def captions_of(record: dict) -> list[dict]:
    """A clip's captions with the span of native frames each describes (for a table)."""
    return [{"caption": c["caption"], "events": len(c["events"]), "frames": len(c["frames"]),
             "span": f"{c['frames'][0]}–{c['frames'][-1]}"} for c in record["captions"]]


def clip_phrases(record: dict) -> list[str]:
    """What can be said about a clip: each event's phrase, each filler's caption, then its captions."""
    from .toy import frame_captions

    return list(dict.fromkeys(frame_captions(record) + [c["caption"] for c in record["captions"]]))


def caption_rows(features) -> dict[str, int]:
    """video id -> the row of its (first) caption, for splits with one caption per video."""
    out = {}
    for i, v in enumerate(features.texts.video.tolist()):
        out.setdefault(features.videos.ids[v], i)
    return out


def sibling_batch(features, truth: dict, size: int = 8) -> list[int]:
    """Caption rows of `size` test clips in colour-swapped sibling pairs (neighbours in the batch): the
    pairs a mean of frames confuses and a frame-by-frame teacher can tell apart."""
    rows_of = caption_rows(features)
    rows, seen = [], set()
    for vid in features.videos.ids:
        sib = truth.get(vid, {}).get("sibling")
        if vid in seen or sib not in rows_of:
            continue
        rows += [rows_of[vid], rows_of[sib]]
        seen |= {vid, sib}
        if len(rows) >= size:
            break
    return rows[:size]


def described_frames(features, truth: dict, rows: list[int]) -> list[set[int]]:
    """The native frames each caption row describes (toy ground truth; empty if unknown)."""
    out = []
    for r in rows:
        rec = truth.get(features.videos.ids[int(features.texts.video[r])], {})
        out.append(next((set(c["frames"]) for c in rec.get("captions", []) if c["caption"] == features.texts.captions[r]),
                        set()))
    return out


def described_mask(features, truth: dict, rows: list[int]) -> np.ndarray:
    """bool [len(rows), T]: which sampled frames show what caption row i describes."""
    sets = described_frames(features, truth, rows)
    idx = features.videos.indices[features.texts.video[rows]].tolist()
    return np.array([[int(i) in s for i in row] for row, s in zip(idx, sets)], dtype=bool).reshape(len(rows), -1)


def query_view(features, truth: dict, root: str | os.PathLike, row: int) -> dict:
    """What the figures of one query need: caption, video, the sampled frames it was scored on, truth mask."""
    from .viz import frames_at

    v = int(features.texts.video[row])
    vid = features.videos.ids[v]
    return {"row": row, "caption": features.texts.captions[row], "video": vid,
            "sibling": truth.get(vid, {}).get("sibling"),
            "thumbs": frames_at(Path(root) / vid, features.videos.indices[v].numpy()),
            "truth": described_mask(features, truth, [row])[0]}


def example_queries(features, truth: dict, n: int = 4) -> list[str]:
    """Test captions to search for: a sibling pair first (the hard case), then others."""
    rows = sibling_batch(features, truth, 2)
    rows += [r for r in range(len(features.texts)) if r not in rows][: max(0, n - len(rows))]
    return [features.texts.captions[r] for r in rows[:n]]

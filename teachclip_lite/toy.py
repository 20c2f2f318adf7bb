"""The toy video world: generated clips whose ground truth we know.

Each clip is a sequence of short events (a coloured shape moving one way, with a
fading trail so a single frame shows the direction) separated by frames that say
nothing: blank screens, static noise and clutter of small random shapes. Each
caption describes only one or two of the events, as MSR-VTT captions describe
part of a video, and the generator records which frames each caption is about.
Some clips come with a "sibling" that has the same shapes, colours and motions
but with the colours handed to other shapes: only a model that looks at frames
one by one (a fine-grained teacher) can tell the two apart; an average over
frames cannot. This is where TeachCLIP's effects come from in this world.

`python -m teachclip_lite.toy --out data/toy` writes, in the PoC data format
(data/README.md): videos/*.mp4, captions.csv (video, caption, split),
frame_captions.csv (per-frame captions, to pretrain the toy CLIP),
truth.jsonl (events and the frames each caption describes) and meta.json.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from .paths import write_atomic
from .video import write_video

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLOURS = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40),
    "purple": (160, 60, 220), "orange": (250, 140, 20), "white": (240, 240, 240), "cyan": (40, 220, 230),
}
DECOY_COLOURS = {"grey": (150, 150, 150), "brown": (140, 90, 40)}   # shapes no caption ever mentions
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
FILLERS = ("blank", "noise", "clutter")
FILLER_CAPTIONS = {"blank": "a blank screen", "noise": "static noise", "clutter": "colourful clutter"}


@dataclass(frozen=True)
class ToyConfig:
    """Sizes of the toy world. The defaults generate in well under a minute on 2 cores."""

    seed: int = 0
    n_train: int = 1000
    n_val: int = 100
    n_test: int = 300
    size: int = 64                       # frame side in pixels (<= 96)
    fps: int = 8
    events: tuple[int, int] = (3, 3)     # events per clip (min, max)
    event_frames: tuple[int, int] = (6, 9)
    gap_frames: tuple[int, int] = (2, 4)  # filler frames before, between and after events
    captions_per_video: int = 4          # training captions (val/test: one query each)
    query_events: int = 2                # events a val/test query describes
    sibling_frac: float = 0.4            # share of clips that come as colour-swapped pairs
    decoys: int = 0                      # decoy events per clip: moving shapes in DECOY_COLOURS, never captioned
    cuts: int = 0                        # "cuts" per clip: short shots of other content, in the captioned
                                         # colours and shapes, that no caption of this clip describes
    cut_frames: tuple[int, int] = (2, 3)
    unique_queries: bool = False         # val/test: no two queries describe the same events (colour, shape,
                                         # motion), so a perfect reader of the query could single out its clip
    workers: int = 2


@dataclass
class Event:
    colour: str
    shape: str
    motion: str
    start: int = 0   # first native frame
    end: int = 0     # one past the last native frame
    decoy: bool = False  # content no caption describes (a shot of something else)
    cut: bool = False    # a decoy in the captioned vocabulary, cut_frames long

    def phrase(self) -> str:
        article = "an" if self.colour[0] in "aeiou" else "a"
        if self.motion == "still":
            return f"{article} {self.colour} {self.shape} standing still"
        return f"{article} {self.colour} {self.shape} moving {self.motion}"


@dataclass
class ToyVideo:
    video: str
    split: str
    num_frames: int
    events: list[Event]
    fillers: list[tuple[int, int, str]]            # (start, end, kind)
    captions: list[dict] = field(default_factory=list)  # {"caption", "events", "frames"}
    sibling: str | None = None


# ---------------------------------------------------------------- drawing

@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y, x


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    y, x = _grid(size)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "square":
        return (np.abs(dx) <= 0.82 * r) & (np.abs(dy) <= 0.82 * r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.1 * r
    if shape == "triangle":
        t = (dy + r) / (1.9 * r)  # 0 at the apex, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r)
    if shape == "cross":
        return ((np.abs(dx) <= 0.3 * r) & (np.abs(dy) <= r)) | ((np.abs(dy) <= 0.3 * r) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(20, 60, size=3)
    return np.broadcast_to(base.astype(np.uint8), (size, size, 3)).copy()


def render_event(ev: Event, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """n frames of one shape moving with a fading trail of its last two positions."""
    r = size * rng.uniform(0.13, 0.17)
    speed = size * rng.uniform(0.035, 0.05)
    vx, vy = MOTIONS[ev.motion]
    travel = speed * (n - 1)
    lo, hi = r + 1, size - r - 1
    x0 = rng.uniform(lo + max(0, -vx) * travel, hi - max(0, vx) * travel) if hi - lo > travel else size / 2
    y0 = rng.uniform(lo + max(0, -vy) * travel, hi - max(0, vy) * travel) if hi - lo > travel else size / 2
    colour = np.array({**COLOURS, **DECOY_COLOURS}[ev.colour], dtype=np.float32)
    bg = _background(rng, size).astype(np.float32)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = bg.copy()
        for lag, alpha in ((2, 0.25), (1, 0.5), (0, 1.0)):
            if vx == 0 and vy == 0 and lag:
                continue
            j = i - lag
            cx, cy = x0 + vx * speed * j, y0 + vy * speed * j
            m = shape_mask(ev.shape, size, cx, cy, r)
            img[m] = (1 - alpha) * img[m] + alpha * colour
        out[i] = np.clip(img + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
    return out


def render_filler(kind: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "blank":
        bg = _background(rng, size)
        return np.broadcast_to(bg, (n, size, size, 3)).copy()
    if kind == "noise":
        return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    out = np.empty((n, size, size, 3), dtype=np.uint8)  # clutter: many small shapes, a new layout each frame
    names = list(COLOURS)
    for i in range(n):
        img = _background(rng, size)
        for _ in range(rng.integers(8, 14)):
            m = shape_mask(SHAPES[rng.integers(len(SHAPES))], size, rng.uniform(0, size), rng.uniform(0, size),
                           size * rng.uniform(0.03, 0.06))
            img[m] = COLOURS[names[rng.integers(len(names))]]
        out[i] = img
    return out


# ---------------------------------------------------------------- clips and captions

def _random_events(rng: np.random.Generator, cfg: ToyConfig) -> list[Event]:
    k = int(rng.integers(cfg.events[0], cfg.events[1] + 1))
    colours = rng.choice(list(COLOURS), size=k, replace=False)   # distinct colours, so swaps change bindings
    shapes = rng.choice(SHAPES, size=k, replace=False)
    motions = rng.choice(list(MOTIONS), size=k)
    events = [Event(str(c), str(s), str(m)) for c, s, m in zip(colours, shapes, motions)]
    for _ in range(cfg.decoys):   # a decoy goes anywhere on the timeline, between the real events
        d = Event(str(rng.choice(list(DECOY_COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(list(MOTIONS))),
                  decoy=True)
        events.insert(int(rng.integers(len(events) + 1)), d)
    for _ in range(cfg.cuts):     # a cut looks like any other clip's content: only the captions tell it apart
        d = Event(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(list(MOTIONS))),
                  decoy=True, cut=True)
        events.insert(int(rng.integers(len(events) + 1)), d)
    return events


def _layout(rng: np.random.Generator, events: list[Event], cfg: ToyConfig):
    """Place events on the timeline with filler gaps; returns (num_frames, fillers)."""
    t, fillers = 0, []
    for i in range(len(events) + 1):
        g = int(rng.integers(cfg.gap_frames[0], cfg.gap_frames[1] + 1))
        fillers.append((t, t + g, FILLERS[int(rng.integers(len(FILLERS)))]))
        t += g
        if i < len(events):
            lo, hi = cfg.cut_frames if events[i].cut else cfg.event_frames
            n = int(rng.integers(lo, hi + 1))
            events[i].start, events[i].end = t, t + n
            t += n
    return t, fillers


def caption_for(events: list[Event], which: list[int], rng: np.random.Generator) -> str:
    phrases = [events[i].phrase() for i in sorted(which)]
    if len(phrases) == 1:
        return phrases[0]
    joiner = (", then ", " and then ", " followed by ")[int(rng.integers(3))]
    return joiner.join(phrases)


def _captions(rng: np.random.Generator, v: ToyVideo, cfg: ToyConfig) -> None:
    real = [i for i, e in enumerate(v.events) if not e.decoy]   # decoys are never described
    k = len(real)
    if v.split == "train":  # distinct subsets of one or two events
        options = [[real[i]] for i in range(k)] + [[real[i], real[j]] for i in range(k) for j in range(i + 1, k)]
        pick = rng.choice(len(options), size=min(cfg.captions_per_video, len(options)), replace=False)
        choices = [options[int(i)] for i in pick]
    else:
        choices = [sorted(real[i] for i in rng.choice(k, size=min(cfg.query_events, k), replace=False).tolist())]
    for which in choices:
        frames = [f for i in which for f in range(v.events[i].start, v.events[i].end)]
        v.captions.append({"caption": caption_for(v.events, which, rng), "events": which, "frames": frames})


def _query_key(v: ToyVideo) -> frozenset:
    """What a val/test clip's query says: the attributes of the events it describes."""
    return frozenset((e.colour, e.shape, e.motion) for e in (v.events[i] for i in v.captions[0]["events"]))


def plan_world(cfg: ToyConfig) -> list[ToyVideo]:
    """Every clip's events, timeline and captions, drawn from the seed (no pixels yet)."""
    videos: list[ToyVideo] = []
    for split, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
        rng = np.random.default_rng([cfg.seed, ("train", "val", "test").index(split)])
        i, tries, seen = 0, 0, set()
        while i < n:
            events = _random_events(rng, cfg)
            group = [events]
            if rng.random() < cfg.sibling_frac and i + 1 < n:
                real = [i for i, e in enumerate(events) if not e.decoy]   # colours rotate among the real events
                colour = {i: events[j].colour for i, j in zip(real, np.roll(real, 1))}
                group.append([Event(colour.get(i, e.colour), e.shape, e.motion, decoy=e.decoy, cut=e.cut)
                              for i, e in enumerate(events)])
            names = [f"videos/{split}_{i + j:05d}.mp4" for j in range(len(group))]
            made = []
            for j, evs in enumerate(group):
                num, fillers = _layout(rng, evs, cfg)
                v = ToyVideo(names[j], split, num, evs, fillers,
                             sibling=names[1 - j] if len(group) == 2 else None)
                _captions(rng, v, cfg)
                made.append(v)
            if cfg.unique_queries and split != "train":
                keys = [_query_key(v) for v in made]
                if len(set(keys)) < len(keys) or set(keys) & seen:
                    tries += 1
                    if tries > 10_000:
                        raise ValueError(f"ToyConfig.unique_queries: cannot draw {n} distinct {split} queries")
                    continue       # redraw this clip: its query would match an earlier one
                seen.update(keys)
            videos += made
            i += len(group)
    return videos


def render_video(v: ToyVideo, cfg: ToyConfig) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, 7, int(hashlib.md5(v.video.encode()).hexdigest()[:8], 16)])
    frames = np.empty((v.num_frames, cfg.size, cfg.size, 3), dtype=np.uint8)
    for s, e, kind in v.fillers:
        frames[s:e] = render_filler(kind, e - s, cfg.size, rng)
    for ev in v.events:
        frames[ev.start:ev.end] = render_event(ev, ev.end - ev.start, cfg.size, rng)
    return frames


def to_record(v: ToyVideo) -> dict:
    """The ground-truth record of a clip, as stored in truth.jsonl."""
    return {"video": v.video, "split": v.split, "num_frames": v.num_frames, "sibling": v.sibling,
            "events": [{k: x for k, x in asdict(e).items() if k != "cut" or x} for e in v.events], "fillers": [list(f) for f in v.fillers],
            "captions": v.captions}


def frame_captions(record: dict) -> list[str]:
    """One caption per native frame of a clip (a truth record): what that frame alone shows."""
    caps = [""] * record["num_frames"]
    for s, e, kind in record["fillers"]:
        caps[s:e] = [FILLER_CAPTIONS[kind]] * (e - s)
    for ev in record["events"]:
        caps[ev["start"]:ev["end"]] = [Event(ev["colour"], ev["shape"], ev["motion"]).phrase()] * (ev["end"] - ev["start"])
    return caps


def _write_one(args) -> None:
    v, cfg, out = args
    path = out / v.video
    if not path.exists():  # files are written atomically, so an existing one is complete
        write_video(path, render_video(v, cfg), fps=cfg.fps)


def _csv_text(header: list[str], rows: list[list]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def is_complete(out: str | os.PathLike, cfg: ToyConfig = ToyConfig()) -> bool:
    """A finished world of exactly this config is on disk (the marker holds the config)."""
    marker = Path(out) / ".complete"
    return marker.exists() and marker.read_text() == json.dumps(asdict(cfg), sort_keys=True)


def generate(out: str | os.PathLike = "data/toy", cfg: ToyConfig = ToyConfig(), progress: bool = True) -> Path:
    """Write the toy world to `out`. Resumes: clips already on disk are kept; a finished world is not redone."""
    from tqdm.auto import tqdm

    out = Path(out)
    marker = out / ".complete"
    cfg_json = json.dumps(asdict(cfg), sort_keys=True)
    if is_complete(out, cfg):
        return out
    if marker.exists():
        marker.unlink()
        for p in (out / "videos").glob("*.mp4"):  # another config: stale clips must go
            p.unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    videos = plan_world(cfg)
    jobs = [(v, cfg, out) for v in videos]
    if cfg.workers > 1:
        with get_context("fork").Pool(cfg.workers) as pool:
            for _ in tqdm(pool.imap_unordered(_write_one, jobs, chunksize=8), total=len(jobs),
                          desc="toy videos", disable=not progress):
                pass
    else:
        for j in tqdm(jobs, desc="toy videos", disable=not progress):
            _write_one(j)
    write_atomic(out / "captions.csv", _csv_text(
        ["video", "caption", "split"], [[v.video, c["caption"], v.split] for v in videos for c in v.captions]))
    records = [to_record(v) for v in videos]
    write_atomic(out / "frame_captions.csv", _csv_text(
        ["video", "frame", "caption", "split"],
        [[r["video"], i, c, r["split"]] for r in records for i, c in enumerate(frame_captions(r))]))
    write_atomic(out / "truth.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    size = sum(p.stat().st_size for p in (out / "videos").glob("*.mp4"))
    meta = {"config": asdict(cfg), "videos": len(videos), "captions": sum(len(v.captions) for v in videos),
            "video_bytes": size, "seconds": round(time.perf_counter() - t0, 2)}
    write_atomic(out / "meta.json", json.dumps(meta, indent=2))
    write_atomic(marker, cfg_json)
    return out


def load_truth(root: str | os.PathLike = "data/toy") -> dict[str, dict]:
    """video -> its ground truth record (events, fillers, captions with their frames)."""
    with open(Path(root) / "truth.jsonl", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return {r["video"]: r for r in recs}


def caption_frames(truth: dict[str, dict]) -> dict[tuple[str, str], list[int]]:
    """(video, caption) -> the native frames that caption describes."""
    return {(v, c["caption"]): c["frames"] for v, r in truth.items() for c in r["captions"]}


def event_frames(record: dict) -> list[int]:
    """Native frames of a clip that show any real event (what any caption could describe; not decoys)."""
    return [f for e in record["events"] if not e.get("decoy") for f in range(e["start"], e["end"])]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Generate the toy video world.")
    p.add_argument("--out", default="data/toy")
    for name, default in asdict(ToyConfig()).items():
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    a = p.parse_args(argv)
    cfg = ToyConfig(**{k: getattr(a, k) for k in asdict(ToyConfig()) if hasattr(a, k)})
    was_complete = is_complete(a.out, cfg)
    out = generate(a.out, cfg)
    meta = json.loads((out / "meta.json").read_text())
    print(f"toy world in {out}: {meta['videos']} videos, {meta['captions']} captions, "
          f"{meta['video_bytes'] / 1e6:.1f} MB of MP4, "
          + (f"already complete (generated earlier in {meta['seconds']} s)" if was_complete
             else f"generated in {meta['seconds']} s"))


if __name__ == "__main__":
    main()

"""What the lessons share: the lesson context, the data and models they train, and the numbers they show.

- `start` opens a lesson: plots that also draw in exported HTML, one torch thread, its output folder,
  `Lesson.record` (the metrics JSON the runner and the tests read), `Lesson.claim` (a sentence of the
  lesson's text with the measurement that backs it: checked when the lesson runs) and `show_code` (the
  library's own implementation of the idea, on screen);
- `lesson_features`, `experiment`: the toy world's cached features (optionally fewer training videos) and
  the ablation config. Checkpoints go to one folder per data and settings (`experiments.models_dir`,
  default runs/models), so a model trained by `make bench` or by an earlier lesson is loaded, not trained again;
- what the figures need from trained models: batch similarities, teacher relevance, sibling confusion,
  AFA weights, a gallery of successes and failures, query costs;
- bring-your-own-videos helpers (lesson 05): an example folder in the PoC format, its overview, its index.

The notebooks call these; the runner (runner.py) executes the notebooks, and toy_views.py / search.py hold
the toy world's views and search.
"""
from __future__ import annotations

import inspect
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from .paths import RUNS_DIR, TOY_DIR, write_atomic
from .toy_views import described_frames, described_mask

# What a claim needs to be checked: "any" data (the test profile's small runs show it too) or the "full"
# budget (the whole training set and the kit's epochs; on the test profile it is recorded, not checked).
NEEDS = ("any", "full")


@dataclass
class Lesson:
    name: str
    out: Path                        # metrics JSON, executed artefacts, example data
    models: Path                     # checkpoint folders (experiments.models_dir), shared with make bench
    profile: str = "demo"            # "test": small data, only claims that small data can show are checked
    values: dict = field(default_factory=dict)

    @property
    def metrics_path(self) -> Path:
        return self.out / f"{self.name}.json"

    def record(self, **values) -> None:
        """Add values to this lesson's metrics JSON (OUT/<name>.json), written atomically."""
        self.values.update(_jsonable(values))
        write_atomic(self.metrics_path, json.dumps(self.values, indent=1))

    def claim(self, claim: str, holds, needs: str = "full", **measured) -> bool:
        """A sentence the lesson's text says, checked: `holds` is computed from `measured` by the caller,
        on the whole test split. Recorded in the metrics JSON (the runner gathers claims.json from it and
        fails when a checked claim does not hold) and shown as a ✓ / ✗ line. A rerun cell replaces its claim."""
        if needs not in NEEDS:
            raise ValueError(f"needs must be one of {NEEDS}, not {needs!r}")
        checked = needs == "any" or self.profile != "test"
        item = {"claim": claim, "holds": bool(holds), "checked": checked, "measured": _jsonable(measured)}
        claims = [c for c in self.values.get("claims", []) if c["claim"] != claim] + [item]
        self.record(claims=claims)
        numbers = ", ".join(f"{k} {_short(v)}" for k, v in item["measured"].items())
        mark = ("✓" if item["holds"] else "✗") + ("" if checked else " (not checked on the test profile)")
        print(f"{mark} {claim}  [{numbers}]")
        return item["holds"]


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    return str(v)


def show_code(*objects):
    """The library's own source of functions or classes (or one method, `Class.method`), highlighted: the
    lesson shows the code it teaches, and an exercise changes it."""
    from IPython.display import Code

    return Code("\n\n".join(inspect.getsource(o).rstrip() for o in objects), language="python")


def start(name: str, out_dir: str | os.PathLike | None = None, models_dir: str | os.PathLike | None = None,
          threads: int = 1, profile: str = "demo") -> Lesson:
    """Open a lesson: figures that draw in JupyterLab and in HTML exports, `threads` torch threads
    (one is fastest on a shared 2-core machine), the folder it writes to (default runs/lessons) and the
    checkpoint folders it shares with make bench (default runs/models)."""
    import torch

    from . import viz

    viz.setup()
    torch.set_num_threads(max(1, threads))
    out = Path(out_dir) if out_dir else RUNS_DIR / "lessons"
    out.mkdir(parents=True, exist_ok=True)
    lesson = Lesson(name, out, Path(models_dir) if models_dir else RUNS_DIR / "models", profile)
    lesson.values = {}
    lesson.record(notebook=name, profile=profile, python=sys.executable,
                  started=datetime.now().isoformat(timespec="seconds"), claims=[])
    return lesson


def environment(root: str | os.PathLike = TOY_DIR) -> list[dict]:
    """What the kit runs on: interpreter, libraries, device, toy world and toy CLIP."""
    import importlib.metadata as md

    import torch

    from .backbone import TOY_CHECKPOINT
    from .paths import CACHE_DIR

    def version(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    root = Path(root)
    meta = json.loads((root / "meta.json").read_text()) if (root / "meta.json").is_file() else None
    clip = TOY_CHECKPOINT.with_suffix(".json")
    clip_meta = json.loads(clip.read_text()) if clip.is_file() else None
    device = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else \
        f"CPU ({os.cpu_count()} cores, torch uses {torch.get_num_threads()} thread(s))"
    rows = [("python", f"{sys.version.split()[0]} ({sys.executable})"), ("device", device)]
    rows += [(p, version(p)) for p in ("torch", "open_clip_torch", "decord", "av", "plotly", "ipywidgets", "papermill")]
    rows += [("toy world", f"{root}: {meta['videos']} videos, {meta['captions']} captions" if meta
              else f"{root}: missing (run `make data`)"),
             ("toy CLIP", f"{TOY_CHECKPOINT.name}: sha256 {clip_meta['sha256_12']}" if clip_meta and
              TOY_CHECKPOINT.is_file() else "missing (run `make toy-clip`)"),
             ("feature cache", str(CACHE_DIR))]
    return [{"item": k, "value": v} for k, v in rows]


def toy_clip_metrics() -> dict:
    """The toy CLIP's provenance: how it was trained and its held-out frame-caption recall."""
    from .backbone import TOY_CHECKPOINT

    meta = json.loads(TOY_CHECKPOINT.with_suffix(".json").read_text())
    return {**meta["metrics"], "steps": meta["recipe"]["steps"], "sha256_12": meta["sha256_12"]}


def try_backbone(name: str = "ViT-B-32", pretrained: str | None = "openai") -> dict:
    """Load a real backbone if its weights are here (or downloadable); otherwise the one-line reason."""
    from .backbone import BackboneConfig, BackboneError, load_backbone

    t0 = time.perf_counter()
    try:
        bb = load_backbone(BackboneConfig(name, pretrained))
        return {"ok": True, "key": bb.key, "embed_dim": bb.embed_dim, "seconds": round(time.perf_counter() - t0, 1)}
    except BackboneError as e:
        return {"ok": False, "message": str(e), "seconds": round(time.perf_counter() - t0, 1)}


def frame_text_similarity(backbone, path: str | os.PathLike, texts: list[str]) -> np.ndarray:
    """Cosine similarity [len(texts), N] of captions with every native frame of a clip (zero-shot CLIP)."""
    import torch
    import torch.nn.functional as F

    from .video import resize_center_crop
    from .viz import clip_frames

    frames = torch.from_numpy(clip_frames(path)).permute(0, 3, 1, 2).contiguous()
    img = F.normalize(backbone.encode_frames(resize_center_crop(frames, backbone.image_size))[0], dim=-1)
    txt = F.normalize(backbone.encode_text(list(texts))[0], dim=-1)
    return (txt @ img.T).numpy()


def limit_videos(features, split: str, n: int | None):
    """The same FeatureSet with only the first n videos of `split` (and their captions) in that split; the
    other captions move to split "unused". The key says so, so checkpoints are kept apart."""
    if not n:
        return features
    vids = list(dict.fromkeys(v for v, s in zip(features.texts.video.tolist(), features.texts.split) if s == split))
    keep = set(vids[: int(n)])
    splits = [s if s != split or v in keep else "unused" for v, s in zip(features.texts.video.tolist(),
                                                                         features.texts.split)]
    return replace(features, texts=replace(features.texts, split=splits), key=f"{features.key}|{split}<={int(n)}")


def lesson_features(max_train_videos: int | None = None, root: str | os.PathLike = TOY_DIR, progress: bool = True):
    """The toy world through the toy CLIP (cached on disk; built on first use, about a minute)."""
    from .features import toy_features

    return limit_videos(toy_features(root, progress=progress), "train", max_train_videos)


def experiment(lesson: Lesson, features, models, seeds=(0,), epochs: int | None = None,
               batch_size: int | None = None, teachers=None, student: dict | None = None,
               truth_root: str | os.PathLike = TOY_DIR, **train):
    """The ablation config of a lesson (epochs and batch default to the kit's budget, TrainConfig()).
    Checkpoints go to `experiments.models_dir` under the lesson's models folder: the same data and
    settings as `make bench` (or an earlier lesson) load its models; a changed setting trains afresh."""
    from .experiments import ExperimentConfig, models_dir
    from .teachers import DEFAULT_TEACHERS
    from .train import TrainConfig

    budget = {k: int(v) for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None}
    cfg = ExperimentConfig(seeds=tuple(int(s) for s in seeds), models=tuple(models),
                           train=TrainConfig(**budget, **train), teachers=tuple(teachers or DEFAULT_TEACHERS),
                           student=dict(student or {}), truth_root=str(truth_root))
    return replace(cfg, out_dir=str(models_dir(cfg, features, lesson.models)))


def summary_rows(summary: dict, models=None, metrics=("t2v_r1", "t2v_r5", "t2v_r10", "t2v_mdr", "sumr")) -> list[dict]:
    """Rows {model, metric: mean, ...} of `Results.summary()` for `viz.markdown_table`."""
    return [{"model": m, **{k: summary[m][k] for k in metrics}} for m in (models or summary) if m in summary]


def batch_table(features, rows: list[int]) -> list[dict]:
    return [{"i": i, "caption": features.texts.captions[r], "video": features.videos.ids[int(features.texts.video[r])]}
            for i, r in enumerate(rows)]


def batch_similarities(results, features, rows: list[int], models, seed: int = 0) -> dict[str, np.ndarray]:
    """[B, B] logits (captions x their videos) of each trained model on one batch."""
    from .student import Student

    texts = features.texts.subset(rows)
    videos = features.videos.subset(features.texts.video[rows])
    out = {}
    for name in models:
        m = results.models[(name, seed)]
        if isinstance(m, Student):
            m.eval()
            out[name] = m.similarity(texts.sentence, videos.frames, videos.mask, words=texts.words,
                                     word_mask=texts.word_mask)[0].numpy()
        else:
            out[name] = m.similarity(texts, videos).numpy()
    return out


def relevance(results, features, rows: list[int], teachers, seed: int = 0) -> dict[str, np.ndarray]:
    """Each teacher's text-to-frame relevance [len(rows), T] of caption row i over its own video's frames."""
    texts = features.texts.subset(rows)
    videos = features.videos.subset(features.texts.video[rows])
    return {name: results.models[(name, seed)].frame_relevance(texts, videos).numpy() for name in teachers}


def relevance_hit(results, features, truth: dict, teachers, seed: int = 0) -> dict[str, float]:
    """Share of each teacher's text-to-frame relevance that falls on the frames the caption describes
    (every query of `features`), beside what spreading it uniformly would score."""
    from .metrics import attention_hit

    rows = list(range(len(features.texts)))
    described = described_frames(features, truth, rows)
    indices = features.videos.indices[features.texts.video]
    rel = relevance(results, features, rows, teachers, seed)
    out = {name: attention_hit(r, indices, described) for name, r in rel.items()}
    out["uniform"] = attention_hit(None, indices, described)
    return out


def pair_confusion(sims: dict[str, np.ndarray]) -> list[dict]:
    """For a batch of sibling pairs (rows 2i, 2i+1): the mean probability (row-wise softmax of the logits)
    each model gives the right video, and the one it gives the right video's sibling."""
    out = []
    for name, m in sims.items():
        m = np.asarray(m, dtype=np.float64)
        p = np.exp(m - m.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        n = len(p) - len(p) % 2
        sib = np.arange(n) ^ 1
        out.append({"model": name, "p_correct": float(p[np.arange(n), np.arange(n)].mean()),
                    "p_sibling": float(p[np.arange(n), sib].mean())})
    return out


def attention_series(results, features, truth: dict, row: int, models, teacher: str = "teacher_ensemble",
                     seed: int = 0) -> dict[str, np.ndarray]:
    """For one test query: each student's AFA weights over its video's frames and the teacher's relevance."""
    series = {m: results.weights[(m, seed)][row].numpy() for m in models if (m, seed) in results.weights}
    if teacher and (teacher, seed) in results.models:
        series[teacher] = relevance(results, features, [row], [teacher], seed)[teacher][0]
    return series


def gallery(results, features, truth: dict, model: str = "teachclip", seed: int = 0, n: int = 3) -> dict:
    """Queries the model gets right (rank 1, most attention on the described frames) and wrong (largest rank),
    with what it retrieved instead and whether that was the clip's colour-swapped sibling."""
    from .metrics import t2v_ranks
    from .train import evaluate_student

    _, sim, w = evaluate_student(results.models[(model, seed)], features)
    ranks = t2v_ranks(sim, features.texts.video).numpy()
    top = sim.argmax(1).numpy()
    rows = list(range(len(features.texts)))
    mask = described_mask(features, truth, rows)
    hit = (w[features.texts.video].numpy() * mask).sum(1) if w is not None else np.zeros(len(rows))

    def item(r):
        vid = features.videos.ids[int(features.texts.video[r])]
        got = features.videos.ids[int(top[r])]
        return {"row": r, "caption": features.texts.captions[r], "video": vid, "rank": int(ranks[r]),
                "retrieved": got, "retrieved_sibling": got == truth.get(vid, {}).get("sibling"),
                "attention_hit": float(hit[r])}

    good = sorted((r for r in rows if ranks[r] == 1), key=lambda r: -hit[r])[:n]
    bad = sorted((r for r in rows if ranks[r] > 1), key=lambda r: -ranks[r])[:n]
    return {"successes": [item(r) for r in good], "failures": [item(r) for r in bad],
            "r1": float((ranks == 1).mean() * 100),
            "sibling_confusions": int(sum(1 for r in rows if ranks[r] > 1 and features.videos.ids[int(top[r])] ==
                                          truth.get(features.videos.ids[int(features.texts.video[r])], {}).get("sibling")))}


def teacher_costs(sizes=(1_000, 10_000, 100_000), teacher_sizes=(1_000, 10_000), dim: int = 512, frames: int = 12,
                  tokens: int = 50, words: int = 32, repeats: int = 3) -> dict:
    """Cost per query of the student's index and of each teacher, at the paper's shapes by default
    (bench.py: measured best-of-`repeats` times, FLOPs counted by torch, bytes kept per video)."""
    from .bench import BenchConfig, efficiency, pair_flops, storage

    cfg = BenchConfig(sizes=tuple(int(n) for n in sizes), teacher_sizes=tuple(int(n) for n in teacher_sizes),
                      dim=dim, frames=frames, tokens=tokens, words=words, repeats=int(repeats), single_queries=4,
                      quality=False)
    with tempfile.TemporaryDirectory(prefix="teachclip-cost-") as work:
        eff = efficiency(cfg, Path(work), log=lambda *a: None)
    return {"efficiency": eff, "flops": pair_flops(dim, frames, tokens, words), "storage": storage(dim, frames, tokens),
            "shapes": {"dim": dim, "frames": frames, "tokens": tokens, "words": words}}


def cost_rows(cost: dict) -> list[dict]:
    """Per model: FLOPs per (query, video), bytes per video, and ms per query at each corpus size."""
    eff = cost["efficiency"]
    rows = []
    for name in cost["flops"]:
        row = {"model": name, "flops": cost["flops"][name], "bytes": cost["storage"].get(name)}
        for n in sorted(eff, key=int):
            e = eff[n]
            ms = e["student_ms_per_query"] if name == "student" else e.get("teacher_ms_per_query", {}).get(name)
            row[f"ms@{n}"] = ms
        rows.append(row)
    return rows


def ms_per_query(cost: dict) -> dict:
    """{N: {model: ms per query}} (teachers beyond the measured sizes are extrapolated linearly)."""
    return {n: {"student": e["student_ms_per_query"], **e.get("teacher_ms_per_query", {})}
            for n, e in cost["efficiency"].items()}


def example_folder(out: str | os.PathLike, n_train: int = 120, n_val: int = 20, n_test: int = 40,
                   seed: int = 7) -> Path:
    """A small folder in the PoC format (videos + captions.csv), generated like the toy world but from
    another seed: a stand-in for your own videos."""
    from .toy import ToyConfig, generate

    return generate(out, ToyConfig(seed=seed, n_train=int(n_train), n_val=int(n_val), n_test=int(n_test),
                                   workers=1), progress=False)


def folder_overview(folder: str | os.PathLike, lines: int = 5) -> str:
    """What a dataset folder holds: how many video files, and the head of its captions file."""
    from .data import CAPTION_FILES
    from .video import find_videos

    folder = Path(folder)
    vids = find_videos(folder)
    text = [f"{folder}: {len(vids)} video files, e.g. {', '.join(vids[:3])}"]
    for name in CAPTION_FILES:
        if (folder / name).is_file():
            head = (folder / name).read_text(encoding="utf-8", errors="replace").splitlines()
            text += [f"\n{name} ({len(head) - (name.endswith('.csv'))} rows):"] + head[: lines + 1]
            break
    return "\n".join(text)


def dataset_summary(ds) -> list[dict]:
    rows = [{"split": s or "(none: index only)", "videos": len(ds.videos(s)),
             "captions": sum(1 for c in ds.captions if c.split == s)} for s in ds.splits()]
    return rows


def test_queries(ds, n: int = 3) -> dict[str, str]:
    """Up to n captions of a dataset's test split (else any split) -> their video."""
    caps = [c for c in ds.captions if c.split == "test"] or list(ds.captions)
    return {c.text: c.video for c in caps[:n]}


def index_folder(base: str | os.PathLike, encoder) -> Path:
    """An index folder per encoder (backbone, frames, pooling, model): rebuilding with another
    model never collides with an index built by an earlier one."""
    from .encoder import spec_sha

    return Path(f"{base}-{encoder.spec.get('pooling')}-{spec_sha(encoder.spec)[:8]}")


def write_train_config(path: str | os.PathLike, **settings) -> Path:
    """The YAML config `teachclip-lite train --config` reads (see poc.TRAIN_KEYS)."""
    import yaml

    path = Path(path)
    write_atomic(path, yaml.safe_dump(_jsonable(settings), sort_keys=False))
    return path


def _jsonable(x):
    """Numbers, strings, lists and dicts only (numpy and torch scalars become floats, tuples lists)."""
    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item") else
                                 (o.tolist() if hasattr(o, "tolist") else str(o))))



# ====================================================================== what the claims measure

def test_similarities(results, features, models, seed: int = 0) -> dict:
    """Each model's [queries, videos] logits over a whole split (the evaluation's own matrix)."""
    from .student import Student
    from .train import evaluate_student, evaluate_teacher

    out = {}
    for name in models:
        m = results.models[(name, seed)]
        out[name] = (evaluate_student(m, features)[1] if isinstance(m, Student) else evaluate_teacher(m, features)[1])
    return out


def sibling_accuracy(results, features, truth: dict, models, seed: int = 0) -> dict:
    """Over every query whose clip has its colour-swapped sibling in the split: the share on which the model
    scores the right clip above the sibling (0.5: it cannot tell them apart), with the number of queries."""
    row_of = {v: i for i, v in enumerate(features.videos.ids)}
    pairs = [(q, row_of[truth[features.videos.ids[v]]["sibling"]]) for q, v in enumerate(features.texts.video.tolist())
             if truth.get(features.videos.ids[v], {}).get("sibling") in row_of]
    q, sib = (np.array(x, dtype=np.int64) for x in zip(*pairs)) if pairs else (np.zeros(0, int),) * 2
    right = features.texts.video.numpy()[q]
    out = {}
    for name, sim in test_similarities(results, features, models, seed).items():
        s = sim.numpy()
        out[name] = float((s[q, right] > s[q, sib]).mean()) if len(q) else None
    out["queries"] = len(q)
    return out


def nce_fell(histories: dict, models, seed: int = 0) -> dict[str, bool]:
    """Did each model's epoch-mean InfoNCE end lower than it started?"""
    return {m: histories[(m, seed)][-1]["nce"] < histories[(m, seed)][0]["nce"] for m in models
            if histories.get((m, seed)) and "nce" in histories[(m, seed)][0]}


def gap_closure(summary: dict, student: str = "teachclip", metric: str = "t2v_r1") -> dict:
    """G = (student − best untaught baseline) / (best single teacher − that baseline), over the models present
    (the registry's baselines and teachers, models.py)."""
    from .models import list_models

    teachers, baselines = list_models("teacher"), list_models("baseline")
    t = max((m for m in teachers if m in summary), key=lambda m: summary[m][metric])
    b = max((m for m in baselines if m in summary), key=lambda m: summary[m][metric])
    gap = summary[t][metric] - summary[b][metric]
    return {"best_teacher": t, "teacher": summary[t][metric], "best_baseline": b, "baseline": summary[b][metric],
            "gap": gap, student: summary[student][metric],
            "G": (summary[student][metric] - summary[b][metric]) / gap if gap > 0 else None}


def index_agreement(engine, features) -> dict:
    """Every query of the split through the search engine's index (from its text, as a user types it) against
    the evaluation's similarity matrix: the share whose top-1 clip is the same, and the index's R@1."""
    from .train import evaluate_student

    sim = evaluate_student(engine.student, features)[1]
    top_eval = sim.argmax(1).tolist()
    found = [engine.search(c, 1, teacher=False)["student"][0]["video"] for c in features.texts.captions]
    ids = features.videos.ids
    same = [f == ids[t] for f, t in zip(found, top_eval)]
    right = [f == ids[int(v)] for f, v in zip(found, features.texts.video.tolist())]
    return {"queries": len(found), "same_top1": float(np.mean(same)), "index_r1": 100 * float(np.mean(right))}

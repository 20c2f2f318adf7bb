"""The lessons, run end to end: every notebook under papermill, and what they share.

    python -m teachclip_lite.demo --out runs/20250101-120000 [--profile demo|test] [--only 02 03]

executes the notebooks in `notebooks/` in order with the demo parameters (the
notebooks' own defaults) or the test parameters (small and quick; the test
suite uses them), writes each executed notebook, its HTML export and the
metrics JSON it records into --out, and prints the results table.

The notebooks hold narrative, parameters and short calls; the helpers they share
live here (and their figures in viz.py):

- `start` opens a lesson: plots that also draw in exported HTML, one torch thread,
  an output folder, and `Lesson.record` to write the metrics the tests check;
- `lesson_features`, `experiment`: the toy world's cached features (optionally
  fewer training videos) and the ablation config; all lessons of one run train
  into one models folder, so a model trained in lesson 01 is reused (resumed,
  not retrained) by lessons 02-04;
- small views for the figures: a batch of sibling clips, teacher relevance,
  ground-truth masks, a gallery of successes and failures, the loss choice;
- `SearchEngine`: the test corpus searched by the student's index and by a teacher;
- the render check: HTML export and a headless Chromium screenshot.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from .paths import PROJECT_ROOT, RUNS_DIR, TOY_DIR, write_atomic

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = ("00_setup_and_toy_world", "01_teacher_scoring", "02_coarse_vs_fine_distillation",
             "03_afa_attention", "04_interactive_retrieval", "05_bring_your_own_videos")

# Test parameters: each notebook in well under 90 s on 2 busy cores. Fewer training videos and two
# epochs: the numbers are not the lesson's, but every cell runs and every figure is drawn.
_SMALL = {"EPOCHS": 2, "BATCH_SIZE": 64, "MAX_TRAIN_VIDEOS": 200}
TEST_PARAMETERS: dict[str, dict] = {
    "00_setup_and_toy_world": {},
    "01_teacher_scoring": {**_SMALL, "COST_SIZES": [1000, 4000], "COST_TEACHER_SIZES": [1000], "COST_REPEATS": 2},
    "02_coarse_vs_fine_distillation": {**_SMALL, "SEEDS": [0]},
    "03_afa_attention": dict(_SMALL),
    "04_interactive_retrieval": dict(_SMALL),
    "05_bring_your_own_videos": {"EXAMPLE_VIDEOS": [24, 6, 10], "EPOCHS": 2},
}
# Demo parameters: the notebooks' own defaults (what a reader gets in JupyterLab).
DEMO_PARAMETERS: dict[str, dict] = {name: {} for name in NOTEBOOKS}
PROFILES = {"test": TEST_PARAMETERS, "demo": DEMO_PARAMETERS}
CELL_TIMEOUT = {"test": 300, "demo": 1200}   # seconds a cell may run: a guard against a hung kernel, not a budget


# ====================================================================== running notebooks

def kernel_name() -> str:
    """A Jupyter kernel that runs *this* interpreter (the venv's): "python3" when that spec resolves to it,
    else a "teachclip-lite" spec written into this environment. (jupyter_client starts a spec whose argv[0]
    is plain "python" with the interpreter that runs papermill, so the usual venv spec qualifies.)"""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    plain = {"python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]}
    try:
        exe = KernelSpecManager().get_kernel_spec("python3").argv[0]
        if exe in plain or os.path.abspath(exe) == os.path.abspath(sys.executable):
            return "python3"
    except NoSuchKernel:
        pass
    folder = Path(sys.prefix) / "share" / "jupyter" / "kernels" / "teachclip-lite"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (teachclip-lite)", "language": "python"}
    write_atomic(folder / "kernel.json", json.dumps(spec, indent=1))
    return "teachclip-lite"


def notebook_path(name: str) -> Path:
    return NOTEBOOK_DIR / f"{name}.ipynb"


def run_notebook(name: str, out_dir: str | os.PathLike, profile: str = "demo", parameters: dict | None = None,
                 html: bool = False) -> dict:
    """Execute one notebook with a profile's parameters into out_dir; returns its time and recorded metrics."""
    import papermill as pm

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {**PROFILES[profile][name], "OUT_DIR": str(out_dir), **(parameters or {})}
    dst = out_dir / f"{name}.ipynb"
    t0 = time.perf_counter()
    pm.execute_notebook(str(notebook_path(name)), str(dst), parameters=params, kernel_name=kernel_name(),
                        cwd=str(NOTEBOOK_DIR), progress_bar=False, log_output=False,
                        execution_timeout=CELL_TIMEOUT[profile])
    seconds = time.perf_counter() - t0
    metrics_path = out_dir / f"{name}.json"
    if not metrics_path.is_file():
        raise RuntimeError(f"{dst}: ran, but wrote no metrics to {metrics_path}")
    result = {"notebook": name, "profile": profile, "seconds": round(seconds, 1), "path": str(dst),
              "metrics": json.loads(metrics_path.read_text())}
    if html:
        result["html"] = str(export_html(dst))
    return result


def executed(name: str, folder: str | os.PathLike, profile: str = "test") -> dict:
    """`run_notebook` once per folder: a later call reuses the first run's result (or re-raises its error).
    The tests share executed notebooks this way (the notebook tests and the render test)."""
    folder = Path(folder)
    done = folder / f"{name}.run.json"
    if done.exists():
        r = json.loads(done.read_text())
        if "error" in r:
            raise RuntimeError(f"{name} failed earlier in this session: {r['error']}")
        return r
    folder.mkdir(parents=True, exist_ok=True)
    try:
        r = run_notebook(name, folder, profile)
    except Exception as e:
        write_atomic(done, json.dumps({"error": f"{type(e).__name__}: {str(e)[-4000:]}"}))
        raise
    write_atomic(done, json.dumps(r))
    return r


def export_html(ipynb: str | os.PathLike) -> Path:
    """The executed notebook as one HTML page (plotly figures embedded), next to it."""
    import nbformat
    from nbconvert import HTMLExporter

    ipynb = Path(ipynb)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(ipynb), as_version=4))
    out = ipynb.with_suffix(".html")
    write_atomic(out, body)
    return out


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: str | os.PathLike, png: str | os.PathLike, width: int = 1280, height: int = 6000,
               timeout: float = 180, chromium: str | None = None) -> Path:
    """A headless Chromium screenshot of a page, as a reader would see it (fresh profile, no network)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    png = Path(png)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", "--virtual-time-budget=15000",
               f"--screenshot={png}", Path(html_path).resolve().as_uri()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {r.returncode}): {r.stderr[-800:]}")
    return png


def figure_check(html_path: str | os.PathLike, out_dir: str | os.PathLike, width: int = 1280,
                 height: int = 16000) -> dict:
    """Does the page show its plotly figures? Screenshots the page and a control copy in which no figure
    is drawn (`Plotly.newPlot` disabled); the pixels that differ are what plotly drew. A page whose
    plotly.js is missing or broken, or that has no figures, draws none. Both copies hide their <img>
    elements (same layout): animated GIF previews would otherwise differ between two screenshots."""
    from PIL import Image

    html_path, out_dir = Path(html_path), Path(out_dir)
    text = html_path.read_text(encoding="utf-8")
    still = text.replace("</head>", "<style>img { visibility: hidden !important; }</style></head>", 1)
    page, control = out_dir / f"{html_path.stem}.page.html", out_dir / f"{html_path.stem}.no-figures.html"
    write_atomic(page, still)
    write_atomic(control, still.replace("Plotly.newPlot(", "void("))
    shots = [screenshot(p, out_dir / f"{p.stem}.png", width, height) for p in (page, control)]
    a, b = (np.asarray(Image.open(s).convert("RGB"), dtype=np.int16) for s in shots)
    drawn = np.abs(a - b).max(-1) > 40
    rows = np.flatnonzero(drawn.any(1))
    return {"figures_in_html": text.count("Plotly.newPlot("), "plotly_js_embedded": "plotly.js v" in text,
            "drawn_pixels": int(drawn.sum()), "first_figure_row": int(rows[0]) if len(rows) else None,
            "screenshot": str(shots[0]), "control": str(shots[1])}


# ====================================================================== the lesson context

@dataclass
class Lesson:
    name: str
    out: Path                        # metrics JSON, executed artefacts, example data
    models: Path                     # checkpoints shared by the lessons of one run
    values: dict = field(default_factory=dict)

    @property
    def metrics_path(self) -> Path:
        return self.out / f"{self.name}.json"

    def record(self, **values) -> None:
        """Add values to this lesson's metrics JSON (OUT/<name>.json), written atomically."""
        self.values.update(_jsonable(values))
        write_atomic(self.metrics_path, json.dumps(self.values, indent=1))

    def models_for(self, features, *settings) -> Path:
        """The checkpoint folder for one dataset (features key, with any training-video limit) and one set of
        training settings: same data and settings, same folder (resumed); anything else, a fresh one."""
        key = json.dumps([features.key, *_jsonable(list(settings))], sort_keys=True)
        return self.models / hashlib.sha1(key.encode()).hexdigest()[:12]


def start(name: str, out_dir: str | os.PathLike | None = None, models_dir: str | os.PathLike | None = None,
          threads: int = 1) -> Lesson:
    """Open a lesson: figures that draw in JupyterLab and in HTML exports, `threads` torch threads
    (one is fastest on a shared 2-core machine), and the folders it writes to (default runs/lessons)."""
    import torch

    from . import viz

    viz.setup()
    torch.set_num_threads(max(1, threads))
    out = Path(out_dir) if out_dir else RUNS_DIR / "lessons"
    out.mkdir(parents=True, exist_ok=True)
    lesson = Lesson(name, out, Path(models_dir) if models_dir else out / "models")
    lesson.record(notebook=name, python=sys.executable, started=datetime.now().isoformat(timespec="seconds"))
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


def toy_clip_metrics() -> dict:
    """The toy CLIP's provenance: how it was trained and its held-out frame-caption recall."""
    from .backbone import TOY_CHECKPOINT

    meta = json.loads(TOY_CHECKPOINT.with_suffix(".json").read_text())
    return {**meta["metrics"], "steps": meta["recipe"]["steps"], "sha256_12": meta["sha256_12"]}


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


def try_backbone(name: str = "ViT-B-32", pretrained: str | None = "openai") -> dict:
    """Load a real backbone if its weights are here (or downloadable); otherwise the one-line reason."""
    from .backbone import BackboneConfig, BackboneError, load_backbone

    t0 = time.perf_counter()
    try:
        bb = load_backbone(BackboneConfig(name, pretrained))
        return {"ok": True, "key": bb.key, "embed_dim": bb.embed_dim, "seconds": round(time.perf_counter() - t0, 1)}
    except BackboneError as e:
        return {"ok": False, "message": str(e), "seconds": round(time.perf_counter() - t0, 1)}


# ====================================================================== data and training

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


def experiment(lesson: Lesson, features, models, seeds=(0,), epochs: int = 5, batch_size: int = 64,
               teachers=None, student: dict | None = None,
               truth_root: str | os.PathLike = TOY_DIR, **train):
    """The ablation config of a lesson. Checkpoints go to the run's models folder, keyed by the data and every
    training setting, so lessons with the same settings share (resume) them and a changed setting starts afresh."""
    from dataclasses import asdict

    from .experiments import ExperimentConfig
    from .train import TrainConfig

    tcfg = TrainConfig(epochs=int(epochs), batch_size=int(batch_size), **train)
    from .teachers import DEFAULT_TEACHERS

    teachers, student = tuple(teachers or DEFAULT_TEACHERS), dict(student or {})
    return ExperimentConfig(seeds=tuple(int(s) for s in seeds), models=tuple(models), train=tcfg,
                            teachers=teachers, student=student, truth_root=str(truth_root),
                            out_dir=str(lesson.models_for(features, asdict(tcfg), teachers, student)))


def summary_rows(summary: dict, models=None, metrics=("t2v_r1", "t2v_r5", "t2v_r10", "t2v_mdr", "sumr")) -> list[dict]:
    """Rows {model, metric: mean, ...} of `Results.summary()` for `viz.markdown_table`."""
    return [{"model": m, **{k: summary[m][k] for k in metrics}} for m in (models or summary) if m in summary]


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


def batch_table(features, rows: list[int]) -> list[dict]:
    return [{"i": i, "caption": features.texts.captions[r], "video": features.videos.ids[int(features.texts.video[r])]}
            for i, r in enumerate(rows)]


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


def loss_choice(results, features, cfg, coarse=("pearson", "ce", "l1"), fine=("ce", "pearson", "l1"),
                seed: int = 0, progress: bool = True) -> list[dict]:
    """TeachCLIP students trained with each coarse loss (fine fixed at "ce") and each fine loss (coarse fixed
    at "pearson"), by the same teachers, budget and batches as the ablation, each with its official
    recipe weights (losses.recipe_weights: 1 / 10 / 1 for coarse "ce", else 0.2 / 1 / 2). The default
    pair is the ablation's own `teachclip` model, not trained again."""
    from .student import StudentConfig
    from .train import evaluate_student, train_student

    train_fs, val_fs, eval_fs = features.split("train"), features.split("val"), features.split(cfg.eval_split)
    teachers = [results.models[(f"teacher_{t}", seed)] for t in cfg.teachers]
    dim, frames = train_fs.videos.frames.shape[-1], train_fs.videos.frames.shape[1]
    cache: dict = {}
    out = []
    for channel, options in (("coarse", coarse), ("fine", fine)):
        for loss in options:
            c, f = (loss, "ce") if channel == "coarse" else ("pearson", loss)
            if (c, f) == ("pearson", "ce") and ("teachclip", seed) in results.models:
                model = results.models[("teachclip", seed)]
            else:
                tcfg = replace(cfg.train, seed=seed, coarse_loss=c, fine_loss=f, weights=None)  # its recipe
                scfg = StudentConfig(**{"dim": dim, "num_frames": frames, "logit_scale": features.logit_scale,
                                        **cfg.student})
                model, _ = train_student(tcfg, train_fs, val_fs, teachers, scfg, teacher_cache=cache,
                                         progress=progress, desc=f"{channel} {loss}")
            metrics = evaluate_student(model, eval_fs)[0]
            out.append({"channel": channel, "loss": loss, "t2v_r1": metrics["t2v_r1"], "t2v_r5": metrics["t2v_r5"],
                        "t2v_r10": metrics["t2v_r10"], "sumr": metrics["sumr"]})
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


# ====================================================================== search

class SearchEngine:
    """The test corpus searched two ways, as a service would:

    - the student: one vector per video in an `index.Index`; a query is one text encoding,
      the student's text head and one matrix product with a top-k;
    - a teacher: its video side encoded once (frames, per video), then per query its text
      side and the pair scoring network against every stored video.
    """

    def __init__(self, backbone, student, teacher, videos, student_name: str = "teachclip",
                 teacher_name: str = "teacher"):
        import torch

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

    def search(self, query: str, k: int = 5) -> dict:
        import torch

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
            sims = torch.stack([(m.logit_scale * m.pair_sims(m.encode_texts(*(x.to(_device(m)) for x in
                                                                          (sentence, words, wmask))), s)).cpu()
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


def example_queries(features, truth: dict, n: int = 4) -> list[str]:
    """Test captions to search for: a sibling pair first (the hard case), then others."""
    rows = sibling_batch(features, truth, 2)
    rows += [r for r in range(len(features.texts)) if r not in rows][: max(0, n - len(rows))]
    return [features.texts.captions[r] for r in rows[:n]]


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


# ====================================================================== bring your own videos

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
    from .ingest import spec_sha

    return Path(f"{base}-{encoder.spec.get('pooling')}-{spec_sha(encoder.spec)[:8]}")


def write_train_config(path: str | os.PathLike, **settings) -> Path:
    """The YAML config `teachclip-lite train --config` reads (see poc.TRAIN_KEYS)."""
    import yaml

    path = Path(path)
    write_atomic(path, yaml.safe_dump(_jsonable(settings), sort_keys=False))
    return path


# ====================================================================== the report and the command

def _fmt(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f}"


def report(runs: list[dict], total: float, profile: str) -> str:
    """Markdown: time per notebook, the ablation table and the numbers each lesson recorded."""
    lines = [f"## teachclip-lite lessons ({profile} parameters), {total:.0f} s in all", "",
             "| notebook | seconds | status |", "|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['notebook']} | {_fmt(r.get('seconds'), 0)} | {'ok' if 'error' not in r else 'FAILED'} |")
    m = {r["notebook"]: r.get("metrics", {}) for r in runs if "error" not in r}
    if m.get("02_coarse_vs_fine_distillation", {}).get("table"):
        lines += ["", "### The ablation on the toy world (test split, mean ± std over seeds)", "",
                  m["02_coarse_vs_fine_distillation"]["table"]]
    t = m.get("01_teacher_scoring", {})
    if t.get("r1"):
        lines += ["", "### Teachers and what they cost (lesson 01)", "",
                  "| model | R@1 |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in t["r1"].items()]
        if t.get("ms_per_query"):
            lines += ["", "ms per query at N videos (paper shapes): " + "; ".join(
                f"N={n}: " + ", ".join(f"{k} {_fmt(v, 3)}" for k, v in row.items()) for n, row in t["ms_per_query"].items())]
    a = m.get("03_afa_attention", {})
    if a.get("attention_hit"):
        lines += ["", "### Where AFA looks (lesson 03): share of weight on the described frames", "",
                  "| model | attention hit |", "|---|---|"] + \
                 [f"| {k} | {_fmt(v, 3)} |" for k, v in a["attention_hit"].items()]
    s = m.get("04_interactive_retrieval", {})
    if s.get("latency_ms"):
        lines += ["", "### Search (lesson 04): ms per query over the test corpus: " +
                  ", ".join(f"{k} {_fmt(v, 2)}" for k, v in s["latency_ms"].items())]
    b = m.get("05_bring_your_own_videos", {})
    if b.get("student"):
        lines += ["", f"### Your own videos (lesson 05, {b.get('data')}): R@1 student {_fmt(b['student'].get('t2v_r1'))}"
                  f" vs zero-shot meanP {_fmt(b.get('zero_shot_meanP', {}).get('t2v_r1'))}; "
                  f"{b.get('indexed')} videos indexed"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Run the teachclip-lite lessons (notebooks) with papermill.")
    p.add_argument("--out", default=None, help="output folder (default runs/<timestamp>)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="demo")
    p.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 00 02")
    p.add_argument("--no-html", action="store_true", help="skip the HTML export of each executed notebook")
    a = p.parse_args(argv)
    out = Path(a.out or RUNS_DIR / datetime.now().strftime("%Y%m%d-%H%M%S"))
    names = [n for n in NOTEBOOKS if not a.only or any(n.startswith(o) for o in a.only)]
    print(f"running {len(names)} notebook(s) with the {a.profile} parameters into {out}", flush=True)
    t0, runs = time.perf_counter(), []
    for name in names:
        t1 = time.perf_counter()
        try:
            r = run_notebook(name, out, a.profile, html=not a.no_html)
            print(f"  {name}: {r['seconds']:.0f} s", flush=True)
        except Exception as e:
            r = {"notebook": name, "seconds": round(time.perf_counter() - t1, 1),
                 "error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"}
            print(f"  {name}: FAILED after {r['seconds']:.0f} s: {r['error']} (see {out / (name + '.ipynb')})",
                  flush=True)
        runs.append(r)
    total = time.perf_counter() - t0
    text = report(runs, total, a.profile)
    write_atomic(out / "results.md", text + "\n")
    write_atomic(out / "runs.json", json.dumps({"profile": a.profile, "seconds": round(total, 1), "runs": runs},
                                              indent=1))
    print()
    print(text)
    print(f"\nexecuted notebooks, HTML pages and metrics in {out}")
    return 1 if any("error" in r for r in runs) else 0


# ====================================================================== small utilities

def _jsonable(x):
    """Numbers, strings, lists and dicts only (numpy and torch scalars become floats, tuples lists)."""
    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item") else
                                 (o.tolist() if hasattr(o, "tolist") else str(o))))


if __name__ == "__main__":
    sys.exit(main())

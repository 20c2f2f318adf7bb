"""The named ablation: which parts of TeachCLIP do what, over several seeds.

The models are the registry's (models.py: `list_models()`, what each name is and how it is taught).

Every student trains with the same `TrainConfig` (epochs, batches, schedule) and
keeps its best-validation-R@1 checkpoint, so a gain cannot come from a different
budget or from one model overfitting longer than another. The budget is long
enough for the InfoNCE-only students to converge (their validation R@1 plateaus
after ~30 of the 60 epochs): with a short budget teaching mostly buys faster
convergence, which is a different claim. Teachers have their own budget
(`teacher_train`, 20 epochs at 3e-3). Teachers are trained
once per seed and reused by every teachclip_* student of that seed; the students
of a seed share the teachers' outputs on the training set. Seeds run in
`workers` processes (one thread each; the table does not depend on it).

On the toy world, the ground truth says which frames each test query describes:
`attention_hit` (AFA weight on those frames) and `attention_hit_any` (on any
event frame), beside the uniform-weight value in `Results.uniform`.
`synthetic_features` draws a feature-space stand-in for the toy world, for tests
and for trying the pipeline without the toy CLIP.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .features import FeatureSet, TextFeatures, VideoFeatures
from .metrics import attention_hit, attention_hit_any
from .models import get_model, list_models
from .paths import RUNS_DIR, write_atomic
from .tables import markdown_table
from .student import StudentConfig
from .teachers import DEFAULT_TEACHERS, TEACHERS, EnsembleTeacher
from .train import TrainConfig, evaluate_student, evaluate_teacher, train_student, train_teacher

STUDENTS = list_models("baseline", "student")
TEACHER_MODELS = list_models("teacher", "ensemble")
ALL_MODELS = list_models()
METRICS = ("t2v_r1", "t2v_r5", "t2v_r10", "t2v_mdr", "t2v_mnr", "sumr", "v2t_r1", "attention_hit",
           "attention_hit_any")


@dataclass
class ExperimentConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = ALL_MODELS
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher_train: TrainConfig = field(default_factory=TrainConfig.for_teachers)  # seed set per run
    student: dict = field(default_factory=dict)  # StudentConfig fields shared by all students (layers, ...)
    teachers: tuple[str, ...] = DEFAULT_TEACHERS  # who teaches the teachclip_* students (the official configs)
    query: str = "words"                        # every model's query side, teachers included (query.py)
    eval_split: str = "test"
    truth_root: str | None = "data/toy"         # toy ground truth for attention_hit (None: skip)
    out_dir: str | None = None                  # checkpoints + results; a rerun resumes
    workers: int = 3                            # seeds run in this many processes, 1 thread each (CPU only; on 2
                                                # cores 3 seeds finish sooner in 3 processes than in 2 + 1)

    def __post_init__(self):
        bad = [m for m in self.models if m not in ALL_MODELS]
        if bad:
            raise ValueError(f"unknown models {bad}; choose from {ALL_MODELS}")

    @classmethod
    def quick(cls, **kw) -> "ExperimentConfig":
        """Seconds, not minutes: one seed, two epochs, for tests and notebook smoke runs."""
        kw.setdefault("seeds", (0,))
        kw.setdefault("train", TrainConfig(epochs=2, batch_size=64))
        kw.setdefault("teacher_train", TrainConfig.for_teachers(epochs=1, batch_size=64))
        return cls(**kw)


# What a checkpoint depends on: the data and these settings. Seeds and models name files inside the folder;
# the evaluation split, the truth and the worker count change no weight.
_TRAINING_KEYS = ("train", "teacher_train", "student", "teachers", "query")


def models_dir(cfg: ExperimentConfig, features: FeatureSet, root: str | os.PathLike | None = None) -> Path:
    """The checkpoint folder of one dataset and one set of training settings (default under runs/models):
    `make bench` and the lessons that ask for the same models at the same settings share (resume) them
    instead of training twice; a changed setting gets a fresh folder."""
    settings = {k: v for k, v in asdict(cfg).items() if k in _TRAINING_KEYS}
    settings.update(train=cfg.train.settings(), teacher_train=cfg.teacher_train.settings())
    key = json.dumps([features.key, _jsonable(settings)], sort_keys=True)
    return Path(root or RUNS_DIR / "models") / hashlib.sha1(key.encode()).hexdigest()[:12]


@dataclass
class Results:
    rows: list[dict]                      # one per (model, seed): metrics + train seconds
    uniform: dict                         # attention_hit(_any) of uniform weights on the eval split
    config: dict
    seconds: float = 0.0
    models: dict = field(default_factory=dict)      # (name, seed) -> trained Student / Teacher
    histories: dict = field(default_factory=dict)   # (name, seed) -> per-epoch history
    weights: dict = field(default_factory=dict)     # (name, seed) -> AFA weights [Nq, T] of the eval queries

    def summary(self) -> dict[str, dict]:
        """model -> mean over seeds of every metric, plus "std" (population std over seeds) and "seeds"."""
        out = {}
        for name in dict.fromkeys(r["model"] for r in self.rows):
            rs = [r for r in self.rows if r["model"] == name]
            mean, std = {}, {}
            for k in METRICS:
                vals = [r[k] for r in rs if r.get(k) is not None]
                mean[k] = float(np.mean(vals)) if vals else None
                std[k] = float(np.std(vals)) if vals else None
            out[name] = {**mean, "std": std, "seeds": len(rs)}
        return out

    def markdown(self, digits: int = 1) -> str:
        """The results table: mean ± std over seeds."""
        return summary_table(self.summary(), self.uniform, digits)

    def to_json(self, path: str | os.PathLike) -> None:
        write_atomic(path, json.dumps({"rows": self.rows, "uniform": self.uniform, "summary": self.summary(),
                                       "config": self.config, "seconds": self.seconds}, indent=1))


# ------------------------------------------------------------------ ground truth

TABLE_COLUMNS = (("t2v_r1", "R@1"), ("t2v_r5", "R@5"), ("t2v_r10", "R@10"), ("t2v_mdr", "MdR"), ("t2v_mnr", "MnR"),
                 ("sumr", "SumR"), ("v2t_r1", "v2t R@1"), ("attention_hit", "att. hit"),
                 ("attention_hit_any", "att. hit any"))


def summary_table(summary: dict, uniform: dict | None = None, digits: int = 1) -> str:
    """Markdown: one row per model, mean ± std over seeds (attention hits to 3 digits), and the uniform-weight
    reference row when the toy truth was there. `Results.markdown` and the bench print it."""
    rows = []
    for name, m in summary.items():
        cells = [name]
        for k, _ in TABLE_COLUMNS:
            d = 3 if k.startswith("attention") else digits
            cells.append("–" if m.get(k) is None else f"{m[k]:.{d}f} ± {m['std'][k]:.{d}f}")
        rows.append(cells)
    if uniform and uniform.get("attention_hit_uniform") is not None:
        rows.append(["uniform weights", *["–"] * (len(TABLE_COLUMNS) - 2), f"{uniform['attention_hit_uniform']:.3f}",
                     f"{uniform['attention_hit_any_uniform']:.3f}"])
    return markdown_table(["model", *(c for _, c in TABLE_COLUMNS)], rows)


def _truth_sets(fs: FeatureSet, truth: dict | None):
    """Per query: (described native frames, event frames of its video), or None without ground truth."""
    if not truth:
        return None
    described, anyf = [], []
    for cap, v in zip(fs.texts.captions, fs.texts.video.tolist()):
        vid = fs.videos.ids[v]
        rec = truth.get(vid) or truth.get(Path(vid).name)
        if rec is None:
            return None
        frames = next((c["frames"] for c in rec["captions"] if c["caption"] == cap), None)
        if frames is None:
            return None
        described.append(set(frames))
        anyf.append({f for e in rec["events"] if not e.get("decoy") for f in range(e["start"], e["end"])})
    return described, anyf


def _load_truth(root: str | None) -> dict | None:
    if not root or not (Path(root) / "truth.jsonl").exists():
        return None
    from .toy import load_truth

    return load_truth(root)


# ------------------------------------------------------------------ the run

# name -> (student kind, InfoNCE weight, coarse teaching, fine teaching); None: the training recipe's weight
def _student_spec(name: str, cfg: ExperimentConfig, dim: int, frames: int, logit_scale: float):
    """(StudentConfig, loss weights, taught?) of a named student row."""
    spec = get_model(name)
    w_nce, w_coarse, w_fine = cfg.train.weights
    weights = (w_nce if spec.nce is None else spec.nce, w_coarse if spec.coarse else 0.0, w_fine if spec.fine else 0.0)
    scfg = StudentConfig(**{"dim": dim, "num_frames": frames, "logit_scale": logit_scale, "query": cfg.query,
                            **cfg.student})
    return replace(scfg, kind=spec.architecture), weights, spec.taught


def run_experiments(cfg: ExperimentConfig, features: FeatureSet, progress: bool = True,
                    truth: dict | None = None, backbone=None) -> Results:
    """Train and evaluate every model of `cfg.models` for every seed; returns the tidy table.

    `truth` (toy ground truth, as `toy.load_truth` returns) defaults to `cfg.truth_root`. With
    `cfg.train.finetune` the students fine-tune a copy of `backbone` from the features' pixels
    (finetune.attach_pixels) and are evaluated on what their own CLIP makes of the eval split.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    train_fs, val_fs, eval_fs = features.split("train"), features.split("val"), features.split(cfg.eval_split)
    truth = truth if truth is not None else _load_truth(cfg.truth_root)
    sets = _truth_sets(eval_fs, truth)
    q_indices = eval_fs.videos.indices[eval_fs.texts.video]
    uniform = {} if sets is None else {"attention_hit_uniform": attention_hit(None, q_indices, sets[0]),
                                       "attention_hit_any_uniform": attention_hit_any(None, q_indices, sets[1])}
    results = Results([], uniform, {"experiment": _jsonable(asdict(cfg))})
    data = (train_fs, val_fs, eval_fs, sets, q_indices, features.logit_scale, backbone)
    workers = max(1, min(cfg.workers, len(cfg.seeds)))
    if torch.cuda.is_available() or "fork" not in get_all_start_methods() or cfg.train.finetune \
            or distributed.active():
        workers = 1   # a forked child cannot use its parent's CUDA context; no fork on Windows; fine-tuning
                      # wants every core; under torchrun the ranks are the workers
    bar = tqdm(total=len(cfg.seeds), desc="ablation (seeds)", disable=not progress)
    if workers == 1:
        outs = []
        for seed in cfg.seeds:
            outs.append(_run_seed(cfg, seed, data, progress))
            bar.update(1)
    else:  # one process per seed, one thread each; results do not depend on it (everything is seeded)
        global _SHARED
        _SHARED = data  # inherited by the forked workers: the features are not pickled
        with get_context("fork").Pool(workers) as pool:
            outs = []
            for o in pool.imap(_run_seed_worker, [(cfg, seed) for seed in cfg.seeds]):
                outs.append(o)
                bar.update(1)
        _SHARED = None
    bar.close()
    for rows, models, histories, weights in outs:
        results.rows += rows
        results.models.update(models)
        results.histories.update(histories)
        results.weights.update(weights)
    order = {m: i for i, m in enumerate(ALL_MODELS)}
    results.rows.sort(key=lambda r: (order[r["model"]], r["seed"]))
    results.seconds = time.perf_counter() - t_start
    if cfg.out_dir and distributed.is_main():
        results.to_json(Path(cfg.out_dir) / "results.json")
    return results


_SHARED = None


def _run_seed_worker(args):
    cfg, seed = args
    _one_thread()
    return _run_seed(cfg, seed, _SHARED, progress=False)


def _one_thread() -> None:
    """First thing in a forked worker: one thread, so no torch op enters the OpenMP pool the parent may have
    started before the fork (a child that does hangs in its first parallel op: seen in make bench)."""
    torch.set_num_threads(1)


def _run_seed(cfg: ExperimentConfig, seed: int, data, progress: bool):
    """Every model of one seed: teachers first, then the students (which reuse them)."""
    from tqdm.auto import tqdm

    train_fs, val_fs, eval_fs, sets, q_indices, logit_scale, backbone = data
    dim, frames = train_fs.videos.frames.shape[-1], train_fs.videos.frames.shape[1]
    students = [m for m in cfg.models if m in STUDENTS]
    need = {t for t in TEACHERS if f"teacher_{t}" in cfg.models}
    if any(get_model(s).taught for s in students) or "teacher_ensemble" in cfg.models:
        need |= set(cfg.teachers)
    need_teachers = [t for t in TEACHERS if t in need]
    out = Path(cfg.out_dir) / f"seed{seed}" if cfg.out_dir else None
    rows, models, histories, weights = [], {}, {}, {}
    bar = tqdm(total=len(need_teachers) + len(students), desc=f"seed {seed}", disable=not progress, leave=False)

    def record(name, metrics, secs, w=None):
        row = {"model": name, "seed": seed, **{k: metrics.get(k) for k in METRICS if k in metrics},
               "attention_hit": None, "attention_hit_any": None, "train_seconds": round(secs, 2)}
        if w is not None and sets is not None:
            wq = w[eval_fs.texts.video]
            row["attention_hit"] = attention_hit(wq, q_indices, sets[0])
            row["attention_hit_any"] = attention_hit_any(wq, q_indices, sets[1])
            weights[(name, seed)] = wq
        rows.append(row)

    teachers = {}
    for tname in need_teachers:
        t0 = time.perf_counter()
        bar.set_description(f"seed {seed} teacher_{tname}")
        model, hist = train_teacher(replace(cfg.teacher_train, seed=seed), train_fs, val_fs, tname,
                                    progress=progress, out_dir=out / f"teacher_{tname}" if out else None,
                                    query=cfg.query)
        teachers[tname] = model
        models[(f"teacher_{tname}", seed)], histories[(f"teacher_{tname}", seed)] = model, hist
        if f"teacher_{tname}" in cfg.models:
            record(f"teacher_{tname}", evaluate_teacher(model, eval_fs)[0], time.perf_counter() - t0)
        bar.update(1)
    if "teacher_ensemble" in cfg.models:
        ens = EnsembleTeacher([teachers[t] for t in cfg.teachers])
        models[("teacher_ensemble", seed)] = ens
        record("teacher_ensemble", evaluate_teacher(ens, eval_fs)[0], 0.0)
    cache: dict = {}   # teacher outputs on the training set, shared by this seed's students
    for name in students:
        scfg, w_loss, taught = _student_spec(name, cfg, dim, frames, logit_scale)
        t0 = time.perf_counter()
        bar.set_description(f"seed {seed} {name}")
        model, hist = train_student(replace(cfg.train, seed=seed, weights=w_loss), train_fs, val_fs,
                                    [teachers[t] for t in cfg.teachers] if taught else [], scfg,
                                    out_dir=out / name if out else None, progress=progress,
                                    teacher_cache=cache, desc=name, backbone=backbone)
        secs = time.perf_counter() - t0
        if cfg.train.finetune:   # a finetune.EndToEnd: its student, on what its own CLIP makes of the videos
            model, ev = model.student, model.encode(eval_fs)
        else:
            ev = eval_fs
        metrics, _, w = evaluate_student(model, ev)
        models[(name, seed)], histories[(name, seed)] = model, hist
        record(name, metrics, secs, w)
        bar.update(1)
    bar.close()
    return rows, models, histories, weights


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))


# ------------------------------------------------------------------ a stand-in world

# ---------------------------------------------------------------------- the choice of teaching loss

LOSS_CHOICES = {"coarse": ("pearson", "ce", "l1"), "fine": ("ce", "pearson", "l1")}


def loss_choice(results: Results, features: FeatureSet, cfg: ExperimentConfig, seed: int = 0,
                choices: dict = LOSS_CHOICES, progress: bool = True) -> list[dict]:
    """TeachCLIP students trained with each coarse loss (fine fixed at "ce") and each fine loss (coarse fixed
    at "pearson"), by `results`' teachers of `seed`, with the ablation's budget and batches, each with its
    official recipe weights (losses.recipe_weights: 1 / 10 / 1 for coarse "ce", else 0.2 / 1 / 2). The
    default pair is the ablation's own `teachclip` model, not trained again; the others train in
    `cfg.workers` processes and keep their checkpoints beside the ablation's (a rerun loads them)."""
    variants = [(channel, loss) for channel, options in choices.items() for loss in options]
    pairs = {v: (v[1], "ce") if v[0] == "coarse" else ("pearson", v[1]) for v in variants}
    todo = [v for v in variants if not (pairs[v] == ("pearson", "ce") and ("teachclip", seed) in results.models)]
    teachers = [results.models[(f"teacher_{t}", seed)] for t in cfg.teachers]
    global _SHARED
    _SHARED = (cfg, features, teachers, seed)
    workers = max(1, min(cfg.workers, len(todo)))
    if torch.cuda.is_available() or "fork" not in get_all_start_methods():
        workers = 1
    if workers == 1:
        trained = [_loss_variant(pairs[v], progress) for v in todo]
    else:
        with get_context("fork").Pool(workers) as pool:
            trained = pool.starmap(_loss_variant_worker, [(pairs[v], False) for v in todo])
    _SHARED = None
    models = dict(zip(todo, trained))
    eval_fs = features.split(cfg.eval_split)
    out = []
    for v in variants:
        model = models.get(v) or results.models[("teachclip", seed)]
        metrics = evaluate_student(model, eval_fs)[0]
        out.append({"channel": v[0], "loss": v[1], **{k: metrics[k] for k in ("t2v_r1", "t2v_r5", "t2v_r10", "sumr")}})
    return out


def _loss_variant_worker(pair: tuple[str, str], progress: bool):
    _one_thread()
    return _loss_variant(pair, progress)


def _loss_variant(pair: tuple[str, str], progress: bool):
    cfg, features, teachers, seed = _SHARED
    train_fs, val_fs = features.split("train"), features.split("val")
    dim, frames = train_fs.videos.frames.shape[-1], train_fs.videos.frames.shape[1]
    tcfg = replace(cfg.train, seed=seed, coarse_loss=pair[0], fine_loss=pair[1], weights=None)  # its recipe
    scfg = _student_spec("teachclip", cfg, dim, frames, features.logit_scale)[0]
    out = Path(cfg.out_dir) / f"seed{seed}" / f"loss_{pair[0]}_{pair[1]}" if cfg.out_dir else None
    model, _ = train_student(tcfg, train_fs, val_fs, teachers, scfg, out_dir=out, progress=progress,
                             desc=f"coarse {pair[0]} / fine {pair[1]}")
    return model


def synthetic_features(n_train: int = 200, n_val: int = 40, n_test: int = 60, dim: int = 32,
                       num_frames: int = 12, patches: int = 4, seed: int = 0,
                       sibling_frac: float = 0.4) -> tuple[FeatureSet, dict]:
    """A toy-world-shaped FeatureSet drawn directly in feature space, with its ground truth.

    Clips of 3 events (colour, shape, motion) between filler frames; an event frame's
    feature binds its attributes (a shared part plus a colour-shape term), captions
    are sums of their events' text vectors, siblings rotate colours between events.
    Returns (features, truth) with truth in `toy.load_truth`'s format. It is not the
    toy world seen through the toy CLIP, only its shape: use it for tests and demos.
    """
    rng = np.random.default_rng(seed)
    n_col, n_shape, n_mot = 8, 6, 5

    def unit(*shape):
        x = rng.standard_normal((*shape, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    colour, shape, motion, bind, filler = unit(n_col), unit(n_shape), unit(n_mot), unit(n_col, n_shape), unit(3)
    word = {"a": unit(), "then": unit()}

    def event_vec(c, s, m):
        x = 0.5 * (colour[c] + shape[s] + motion[m]) + 0.9 * bind[c, s]
        return x / np.linalg.norm(x)

    vids, frames_l, idx_l, patch_l, truth = [], [], [], [], {}
    caps, cap_video, cap_split, sent_l, words_l = [], [], [], [], []
    max_words = 2 + 2 * 4
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        i = 0
        while i < n:
            ev = [(int(c), int(s), int(rng.integers(n_mot))) for c, s in
                  zip(rng.choice(n_col, 3, replace=False), rng.choice(n_shape, 3, replace=False))]
            group = [ev]
            if rng.random() < sibling_frac and i + 1 < n:
                group.append([(ev[(k - 1) % 3][0], ev[k][1], ev[k][2]) for k in range(3)])
            for j, evs in enumerate(group):
                name = f"{split}_{i + j:05d}.mp4"
                t, events, feats, fill = 0, [], [], []
                for k in range(4):
                    g = int(rng.integers(2, 5))
                    fk = int(rng.integers(3))
                    feats += [filler[fk] + 0.6 * unit() for _ in range(g)]
                    fill.append([t, t + g, ("blank", "noise", "clutter")[fk]])
                    t += g
                    if k < 3:
                        ln = int(rng.integers(6, 10))
                        c, s, m = evs[k]
                        e = event_vec(c, s, m)
                        feats += [e + 0.3 * unit() for _ in range(ln)]
                        events.append({"colour": str(c), "shape": str(s), "motion": str(m), "start": t, "end": t + ln})
                        t += ln
                sample = np.linspace(0, t - 1, num_frames).round().astype(int)
                f = np.stack(feats)[sample] * 3.0
                vids.append(name)
                frames_l.append(f)
                idx_l.append(sample)
                p = f[:, None, :] / 3.0 + 0.5 * rng.standard_normal((num_frames, patches, dim)).astype(np.float32)
                patch_l.append(p)
                n_caps = 4 if split == "train" else 1
                rec_caps = []
                for _ in range(n_caps):
                    which = sorted(rng.choice(3, size=2 if (split != "train" or rng.random() < .5) else 1,
                                              replace=False).tolist())
                    text = " then ".join(f"a c{evs[k][0]} s{evs[k][1]} m{evs[k][2]}" for k in which)
                    sent = sum(event_vec(*evs[k]) for k in which) + 0.3 * unit()
                    toks = [word["a"]]
                    for k in which:
                        c, s, m = evs[k]
                        toks += [colour[c], (shape[s] + bind[c, s]) / 1.4, motion[m], word["then"]]
                    toks = toks[:max_words]
                    w = np.zeros((max_words, dim), np.float32)
                    w[:len(toks)] = np.stack(toks) + 0.1 * rng.standard_normal((len(toks), dim))
                    caps.append(text)
                    cap_video.append(len(vids) - 1)
                    cap_split.append(split)
                    sent_l.append(sent)
                    words_l.append((w, len(toks)))
                    rec_caps.append({"caption": text, "events": which,
                                     "frames": [fr for k in which for fr in range(events[k]["start"], events[k]["end"])]})
                truth[name] = {"video": name, "split": split, "num_frames": t, "events": events, "fillers": fill,
                               "captions": rec_caps,
                               "sibling": f"{split}_{i + 1 - j:05d}.mp4" if len(group) == 2 else None}
            i += len(group)
    videos = VideoFeatures(vids, torch.tensor(np.stack(frames_l)), torch.ones(len(vids), num_frames, dtype=torch.bool),
                           torch.tensor(np.stack(idx_l), dtype=torch.long),
                           torch.tensor(np.stack(patch_l)).half())
    words = torch.tensor(np.stack([w for w, _ in words_l]))
    word_mask = torch.arange(max_words)[None] < torch.tensor([n for _, n in words_l])[:, None]
    texts = TextFeatures(caps, torch.tensor(cap_video), cap_split, torch.tensor(np.stack(sent_l)), words, word_mask)
    return FeatureSet(videos, texts, logit_scale=100.0, key=f"synthetic-{seed}"), truth

"""Train and evaluate on a PoC dataset (a folder of videos + captions, data/README.md) from a
small YAML config: what `teachclip-lite train` and `eval` run; notebook 05 calls the same functions."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from .encoder import read_model
from .errors import PROG, UserError, warn
from .paths import atomic_open, write_atomic
from .precision import PRECISIONS
from .tables import markdown_table

TRAIN_KEYS = {"data": "dataset folder (captions.csv / captions.jsonl / MSR-VTT files)",
              "out": "output folder (checkpoints, metrics, model.pt)",
              "backbone": "'toy' or an open_clip model name (default ViT-B-32)",
              "pretrained": "open_clip tag or checkpoint path (default: openai; the toy checkpoint for 'toy')",
              "frames": "frames sampled per video (default 12)", "seed": "random seed (default 0)",
              "precision": "number format of the backbone's features: fp32 (default), bf16 or auto",
              "models": "which models to train (default [meanP, teachclip])",
              "teachers": "teachers of the TeachCLIP student (default xclip and ts2net, as the official configs)",
              "train": "TrainConfig fields (epochs, batch_size, lr, finetune, precision, ...); finetune: N trains "
                       "CLIP's last N blocks with the student, from pixels (-1: all; 0: frozen, the default)",
              "student": "StudentConfig fields shared by the students (layers, ...)",
              "val_fraction": "share of training videos held out for validation when there is no 'val' split"}


def _read_config(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a mapping of settings (data: ..., out: ...)")
    unknown = [k for k in cfg if k not in TRAIN_KEYS]
    if unknown:
        raise UserError(f"{path}: unknown setting(s) {', '.join(map(str, unknown))} (known: {', '.join(TRAIN_KEYS)})")
    for k in ("data", "out"):
        if not cfg.get(k):
            raise UserError(f"{path}: missing '{k}:' ({TRAIN_KEYS[k]})")
    base = path.parent
    for k in ("data", "out"):   # relative paths are relative to the config file
        cfg[k] = str((base / str(cfg[k])).resolve()) if not Path(str(cfg[k])).is_absolute() else str(cfg[k])
    pre = cfg.get("pretrained")
    if pre and not Path(str(pre)).is_absolute() and (base / str(pre)).is_file():
        cfg["pretrained"] = str((base / str(pre)).resolve())
    try:
        cfg["seed"], cfg["frames"] = int(cfg.get("seed", 0)), int(cfg.get("frames", 12))
        cfg["val_fraction"] = float(cfg.get("val_fraction", 0.1))
    except (TypeError, ValueError):
        raise UserError(f"{path}: seed and frames must be whole numbers, val_fraction a number") from None
    if not 0 < cfg["val_fraction"] < 1 or cfg["frames"] < 1:
        raise UserError(f"{path}: need 0 < val_fraction < 1 and frames >= 1")
    _check_settings(path, cfg)
    return cfg


# Ranges of the settings a config may change: (lowest, highest), "> 0" where zero is not allowed either.
# Types are checked against the dataclasses' own annotations.
RANGES = {"epochs": (1, None), "batch_size": (2, None), "lr": "> 0", "eps": "> 0", "weight_decay": (0, None),
          "warmup": (0, 1), "threads": (1, None), "grad_clip": (0, None), "temporal_lr_mult": (0, None),
          "afa_lr_mult": (0, None), "query_lr_mult": (0, None), "layers": (0, None), "heads": (0, None),
          "afa_temperature": "> 0", "afa_hidden": (0, None), "logit_scale": "> 0", "dim": (1, None),
          "num_frames": (1, None), "recombine": (0, 1), "recombine_cut": (0, 1)}


def _check_settings(path: Path, cfg: dict) -> None:
    """Every value of a config checked by type and range before any work starts; each error names its key."""
    from dataclasses import fields
    from typing import get_type_hints

    from .student import StudentConfig
    from .train import TrainConfig

    for key in ("backbone", "pretrained"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise UserError(f"{path}: {key}: expected a name or a path, got {cfg[key]!r}")
    if cfg.get("precision") is not None and cfg["precision"] not in PRECISIONS:
        raise UserError(f"{path}: precision: expected one of {', '.join(PRECISIONS)}, got {cfg['precision']!r}")
    for key in ("models", "teachers"):
        v = cfg.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise UserError(f"{path}: {key}: expected a list of names, e.g. [meanP, teachclip]; got {v!r}")
    for key, klass in (("train", TrainConfig), ("student", StudentConfig)):
        kw = cfg.get(key)
        if kw is None:
            continue
        if not isinstance(kw, dict):
            raise UserError(f"{path}: {key}: expected a mapping such as {{epochs: 10}}; got {kw!r}")
        hints, known = get_type_hints(klass), {f.name for f in fields(klass)}
        for name, value in kw.items():
            if name not in known:
                continue   # reported, with the known names, by run_train
            if not _fits(value, hints[name]):
                raise UserError(f"{path}: {key}.{name}: expected {_type_name(hints[name])}, got {value!r}")
            bound = RANGES.get(name)
            if bound is None or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            lo, hi = (0, None) if bound == "> 0" else bound
            if value < lo or (bound == "> 0" and value == 0) or (hi is not None and value > hi):
                rule = "> 0" if bound == "> 0" else (f">= {lo}" if hi is None else f"between {lo} and {hi}")
                raise UserError(f"{path}: {key}.{name}: must be {rule}, got {value!r}")


def _fits(value, hint) -> bool:
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    return True


def _type_name(hint) -> str:
    import typing

    names = {int: "a whole number", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(typing.get_args(hint))} numbers"
    args = typing.get_args(hint)
    if args:
        return " or ".join(_type_name(a) for a in args)
    return names.get(hint, str(hint))


def _report_problems(ds, limit: int = 10) -> None:
    probs = ds.problems
    for p in probs[:limit]:
        print(f"{PROG}: {p}", file=sys.stderr)
    if len(probs) > limit:
        print(f"{PROG}: ... and {len(probs) - limit} more problem(s) in {ds.source}", file=sys.stderr)


def _load_data(path, backbone):
    from .data import check_caption_lengths, load_dataset

    ds = load_dataset(path)
    check_caption_lengths(ds, backbone.count_tokens, backbone.context_length)
    _report_problems(ds)
    return ds


def _features(ds, backbone, frames: int, patches: bool):
    from .features import build_features
    from .video import SamplingConfig

    fs = build_features(ds, backbone, SamplingConfig(frames, backbone.image_size), patches=patches)
    missing = len(ds.videos()) - len(fs.videos)
    if missing:
        warn(f"{missing} video(s) could not be read and were left out (with their captions); "
              "see errors.jsonl in the feature cache, or run `index` on the folder to list them")
    if not len(fs.videos):
        raise UserError(f"{ds.root}: none of the dataset's videos could be read")
    return fs


def _hold_out_val(fs, fraction: float, seed: int) -> None:
    """No 'val' split: mark a seeded share of the training videos (and their captions) as validation."""
    train_vids = sorted({int(v) for v, s in zip(fs.texts.video.tolist(), fs.texts.split) if s == "train"})
    n = max(1, int(round(fraction * len(train_vids))))
    if len(train_vids) - n < 2:
        raise UserError("too few training videos to hold some out for validation; add a 'val' split "
                       "(split column) or more training videos")
    rng = np.random.default_rng(seed)
    val = set(rng.choice(train_vids, size=n, replace=False).tolist())
    fs.texts.split = ["val" if s == "train" and int(v) in val else s
                      for v, s in zip(fs.texts.video.tolist(), fs.texts.split)]


def _save_model(src: Path, dst: Path, backbone_meta: dict, frames: int, name: str) -> None:
    import torch

    blob = torch.load(src, map_location="cpu", weights_only=True)
    blob["teachclip_lite"] = {"backbone": backbone_meta, "frames": frames, "model": name}
    with atomic_open(dst) as f:
        torch.save(blob, f)


def run_train(config_path: str | os.PathLike, echo: bool = True, finetune: int | None = None) -> Path:
    """Teachers, then the student(s), on the dataset a YAML config names; returns OUT/model.pt (its metrics
    table in OUT/metrics.md; `echo`: also printed, as the CLI does). `finetune` overrides train.finetune.
    Under torchrun every rank runs this; rank 0 writes the files."""
    from . import distributed
    from dataclasses import fields

    from .backbone import BackboneConfig, load_backbone
    from .experiments import ALL_MODELS, STUDENTS, ExperimentConfig, run_experiments
    from .student import StudentConfig
    from .teachers import DEFAULT_TEACHERS, TEACHERS
    from .train import TrainConfig

    path = Path(config_path)
    cfg = _read_config(path)
    models = tuple(cfg.get("models") or ("meanP", "teachclip"))
    teachers = tuple(cfg.get("teachers") or DEFAULT_TEACHERS)
    bad = [m for m in models if m not in ALL_MODELS] + [t for t in teachers if t not in TEACHERS]
    if bad:
        raise UserError(f"{path}: unknown model/teacher {', '.join(map(str, bad))} (models: {', '.join(ALL_MODELS)}; "
                       f"teachers: {', '.join(TEACHERS)})")
    students = [m for m in models if m in STUDENTS]
    if not students:
        raise UserError(f"{path}: 'models' names no student; add teachclip (or meanP, afa)")
    train_kw, student_kw = dict(cfg.get("train") or {}), dict(cfg.get("student") or {})
    for name, kw, klass in (("train", train_kw, TrainConfig), ("student", student_kw, StudentConfig)):
        known = {f.name for f in fields(klass)}
        unknown = [k for k in kw if k not in known]
        if unknown:
            raise UserError(f"{path}: unknown {name} setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    seed, frames = cfg["seed"], cfg["frames"]
    if finetune is not None:
        train_kw["finetune"] = finetune
    try:
        tcfg = TrainConfig(**{**train_kw, "seed": seed})
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: train: {e}") from None

    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    bcfg = BackboneConfig(cfg.get("backbone") or "ViT-B-32", cfg.get("pretrained"), precision=cfg.get("precision") or "fp32")
    backbone = load_backbone(bcfg)
    pre = bcfg.pretrained
    if pre and Path(pre).expanduser().is_file():
        pre = str(Path(pre).expanduser().resolve())
    meta = {"name": bcfg.name, "pretrained": pre, "key": backbone.key, "precision": backbone.precision}
    main = distributed.is_main()
    echo = echo and main
    if main:
        write_atomic(out / "backbone.json", json.dumps({**meta, "frames": frames}, indent=1).encode())
    ds = _load_data(cfg["data"], backbone)
    from .teachers import build_teacher

    from .models import get_model

    patches = any(build_teacher(t, 8, 2).needs_patches for t in teachers) and \
        any(get_model(m).taught or not get_model(m).is_student for m in models)
    fs = _features(ds, backbone, frames, patches)
    splits = set(fs.texts.split)
    if "train" not in splits:
        raise UserError(f"{ds.source}: no rows with split=train; mark the captions to learn from with "
                       "a 'split' column (train / val / test)")
    if "val" not in splits:
        frac = cfg["val_fraction"]
        _hold_out_val(fs, frac, seed)
        warn(f"no 'val' split in {ds.source}: holding out {frac:.0%} of the training videos for validation")
    eval_split = "test" if "test" in splits else "val"
    if eval_split == "val":
        warn(f"no 'test' split in {ds.source}: the metrics below are on the validation split")
    truth = cfg["data"] if (Path(cfg["data"]) / "truth.jsonl").is_file() else None
    try:
        ecfg = ExperimentConfig(seeds=(seed,), models=models, train=tcfg, student=student_kw, teachers=teachers,
                                eval_split=eval_split, truth_root=truth, out_dir=str(out))
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    if tcfg.finetune:   # end to end: the students read the decoded frames and token ids
        from .finetune import attach_pixels

        attach_pixels(fs, ds.root, backbone, progress=main)
    results = run_experiments(ecfg, fs, progress=main, backbone=backbone)
    table = results.markdown()
    final = "teachclip" if "teachclip" in students else students[-1]
    model = out / "model.pt"
    if main:
        write_atomic(out / "metrics.md", (f"split: {eval_split}\n\n{table}\n").encode())
        _save_model(out / f"seed{seed}" / final / "best.pt", model, meta, frames, final)
    distributed.barrier()
    if echo:
        print(f"text-to-video retrieval on the {eval_split} split ({len(fs.split(eval_split).texts)} queries):")
        print(table)
        print(f"model ({final}): {model}")
        print(f"search your videos with it: {PROG} index VIDEO_DIR --out INDEX_DIR --model {model}")
    return model


def run_eval(model: str | os.PathLike, data: str | os.PathLike, echo: bool = True, precision: str | None = None) -> dict:
    """The student's retrieval metrics on a dataset (its test split, else every caption), beside
    the backbone's zero-shot mean pooling (CLIP4Clip meanP without training) for reference:
    {student, zero_shot_meanP, split, name (the trained model's name), table (Markdown; `echo`: printed)}."""
    import torch
    import torch.nn.functional as F

    from .heads import mean_pool

    from .backbone import BackboneConfig, file_digest, load_backbone, resolve_weights
    from .encoder import use_tuned
    from .metrics import retrieval_metrics
    from .train import evaluate_student

    student, meta = read_model(model)
    bcfg = BackboneConfig(meta["name"], meta.get("pretrained"), precision=precision or meta.get("precision") or "fp32")
    if meta.get("key") and resolve_weights(bcfg)[2] != meta["key"].split("@")[0]:
        raise UserError(f"{model}: trained on backbone {meta['key']}, which now loads with other weights; retrain")
    backbone = load_backbone(bcfg)
    plain = None
    if use_tuned(backbone, model, file_digest(Path(model), 16)):   # fine-tuned end to end: its own CLIP encodes
        plain = load_backbone(bcfg)                                  # and CLIP as it was gives the zero-shot row
    ds = _load_data(data, backbone)
    fs = _features(ds, backbone, student.cfg.num_frames, patches=False)
    split = "test" if "test" in set(fs.texts.split) else None
    if split is None:
        warn(f"no 'test' split in {ds.source}: evaluating on all {len(fs.texts)} captions")
    part = fs.split(split) if split else fs
    metrics, _, _ = evaluate_student(student, part)
    if plain is not None:
        fs0 = _features(ds, plain, student.cfg.num_frames, patches=False)
        part = fs0.split(split) if split else fs0
    v = mean_pool(F.normalize(part.videos.frames, dim=-1), part.videos.mask)
    zero = retrieval_metrics(F.normalize(part.texts.sentence, dim=-1) @ v.T, part.texts.video)
    cols = [("t2v_r1", "R@1"), ("t2v_r5", "R@5"), ("t2v_r10", "R@10"), ("t2v_mdr", "MdR"), ("t2v_mnr", "MnR"),
            ("sumr", "SumR"), ("v2t_r1", "v2t R@1")]
    name = (torch.load(model, map_location="cpu", weights_only=True).get("teachclip_lite") or {}).get("model") \
        or student.cfg.kind
    table = markdown_table(["model", *(c for _, c in cols)], [[n, *(f"{m[k]:.1f}" for k, _ in cols)] for n, m in
                                                               ((name, metrics), ("backbone meanP, zero-shot", zero))])
    if echo:
        print(f"text-to-video retrieval, {len(part.texts)} queries over {len(part.videos)} videos "
              f"({split or 'all'} split of {data}):")
        print(table)
    return {"student": metrics, "zero_shot_meanP": zero, "split": split or "all", "name": name, "table": table}

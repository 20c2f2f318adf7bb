"""The one trainer: students (with or without teachers) and teachers, on cached features.

`train_student` and `train_teacher` share one loop: Adam with decoupled weight decay,
the official betas (0.9, 0.98), eps 1e-6 and per-tensor gradient clipping at norm 1
(TeachCLIP's BertAdam), its warm-up-cosine schedule, batches in which no video appears twice (so InfoNCE has no false
negatives), validation R@1 after every epoch, the best-validation checkpoint kept
(and written atomically when `out_dir` is given), and resume from `out_dir`.
Everything is seeded: the weights from the seed, each epoch's batch order and
dropout from (seed, epoch), so a resumed run reproduces an uninterrupted one.

Teaching is in `losses.teaching_loss`; here we only feed it. Teachers are frozen,
so their outputs are computed once before training: the logits of every training
caption with every training video (each batch's B x B block is cut from it: the
coarse channel) and the frame relevance of each caption with its own video (the
fine channel). Over a few epochs that is cheaper than scoring every batch, and
`teacher_cache` lets several students of one run share it.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import distributed
from .features import FeatureSet
from .losses import COARSE_LOSSES, FINE_LOSSES, info_nce, recipe_weights, teaching_loss
from .metrics import retrieval_metrics
from .paths import atomic_open, write_atomic
from .student import Student, StudentConfig, build_student
from .teachers import Teacher, build_teacher, save_teacher


@dataclass
class TrainConfig:
    """The official recipe (TeachCLIP configs/msrvtt-9k.yaml + BertAdam) where it applies: batch 120,
    weight decay 0.2, warm-up 10 % then cosine, Adam betas (0.9, 0.98), eps 1e-6, gradient clipping
    at norm 1.0, AFA at 10x the lr of the new (temporal) module, the recipe weights of the coarse loss (losses.recipe_weights).

    Departures, on purpose (docs/FAITHFULNESS.md has the measured effect): the backbone is frozen
    and only small heads train on cached features, so lr 1e-2 (official 1e-4 for new modules, with
    CLIP fine-tuned at 1e-7) and 60 epochs (official 10): a one-vector student on frozen features
    needs many passes (its validation R@1 plateaus after ~30 epochs at lr 1e-2); best-validation
    checkpointing guards against overfitting. Teachers start from a sensible zero-init and plateau
    within a few epochs: `for_teachers()`."""

    epochs: int = 60
    batch_size: int = 120
    lr: float = 1e-2
    temporal_lr_mult: float = 0.1       # the temporal module (CLIP blocks) at lr * this: 1e-3 (measured best, FAITHFULNESS.md)
    afa_lr_mult: float = 1.0            # AFA at lr * this: 1e-2, 10x the temporal module, as the official AFA is 10x
                                        # the new modules (at 1e-1 weight decay flattens its scores: FAITHFULNESS.md)
    query_lr_mult: float = 1.0          # the query block (query.py), where a model has one
    weight_decay: float = 0.2
    warmup: float = 0.1                 # share of all steps spent warming the lr up linearly
    seed: int = 0
    device: str = "auto"                # "auto": CUDA when present, else CPU
    coarse_loss: str = "pearson"
    fine_loss: str = "ce"
    weights: tuple[float, float, float] | None = None  # InfoNCE, coarse, fine (None: the coarse loss's recipe)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0              # max gradient norm of each parameter tensor, as BertAdam clips (0: off)
    threads: int = 1                    # CPU threads: on a shared 2-core machine 1 beats 2 by up to 10x (measured)
    finetune: int = 0                   # end to end (finetune.py): 0 = CLIP frozen, heads on cached features (the
                                        # laptop default); N = also train CLIP's last N blocks of each tower; -1 = all
    backbone_lr_mult: float = 1e-3      # fine-tuned CLIP at lr * this (official: CLIP 1e-7 beside new modules 1e-4)
    grad_checkpointing: bool = False    # fine-tuning: recompute CLIP's activations in backward (memory for time)
    precision: str = "auto"             # "auto": bf16 autocast on CUDA, and when fine-tuning on a bf16 CPU; else
                                        # fp32 | "fp32" | "bf16" (autocast) | "fp16" (CUDA, with loss scaling)
    recombine: float = 0.0              # beyond the paper (a study, docs/TOY_WORLD.md row M): each batch adds this
                                        # share of uncaptioned clips, the first half of one batch video's frames
                                        # and the second half of the next's, which the teachers score online and
                                        # the coarse loss alone sees (0: off, the paper's recipe)
    recombine_cut: float = 0.5          # with recombine: the share of a spliced clip's frames from the first video;
                                        # 0: a cut drawn at random per batch (1 .. T-1 frames, row P of the study)

    def __post_init__(self):
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision {self.precision!r} is not one of auto, fp32, bf16, fp16")
        if int(self.finetune) != self.finetune or self.finetune < -1:
            raise ValueError(f"finetune {self.finetune!r}: 0 (frozen CLIP), N > 0 (its last N blocks) or -1 (all)")
        if self.coarse_loss not in COARSE_LOSSES:
            raise ValueError(f"coarse_loss {self.coarse_loss!r} is not one of {COARSE_LOSSES}")
        if not 0 <= self.recombine <= 1:
            raise ValueError(f"recombine {self.recombine!r}: a share of the batch, between 0 and 1")
        if not 0 <= self.recombine_cut < 1:
            raise ValueError(f"recombine_cut {self.recombine_cut!r}: a share of the frames in [0, 1) (0: random)")
        if self.fine_loss not in FINE_LOSSES:
            raise ValueError(f"fine_loss {self.fine_loss!r} is not one of {FINE_LOSSES}")
        self.weights = tuple(float(w) for w in (recipe_weights(self.coarse_loss) if self.weights is None
                                                else self.weights))
        self.betas = tuple(float(b) for b in self.betas)

    def settings(self) -> dict:
        """asdict, less the settings added after checkpoints were first keyed (LATER) where they hold their
        default: older checkpoints and model folders still match a config that does not use them."""
        return {k: v for k, v in asdict(self).items() if not (k in LATER and v == LATER[k])}

    @classmethod
    def for_teachers(cls, **kw) -> "TrainConfig":
        """The teachers' budget: 20 epochs at lr 3e-3. With the word query block (query.py) 6 epochs left
        them short: X-Pool 27.2 -> 36.0 test R@1 at 20 (docs/TOY_WORLD.md)."""
        return cls(**{"epochs": 20, "lr": 3e-3, **kw})


def resolve_device(name: str = "auto") -> torch.device:
    """Under torchrun on CUDA: this rank's GPU, whatever the config says."""
    if distributed.device() is not None:
        return distributed.device()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _precision(cfg: "TrainConfig", device: torch.device) -> str:
    if cfg.precision != "auto":
        if cfg.precision == "fp16" and device.type != "cuda":
            raise ValueError("precision fp16 needs CUDA; use bf16 or fp32 on a CPU")
        return cfg.precision
    if device.type == "cuda":
        return "bf16"
    from .precision import cpu_has_bf16

    return "bf16" if cfg.finetune and cpu_has_bf16() else "fp32"   # small heads: fp32 is as fast


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


LATER = {"finetune": 0, "backbone_lr_mult": 1e-3, "grad_checkpointing": False, "precision": "auto", "recombine": 0.0,
         "recombine_cut": 0.5}


def _same_config(saved: dict, cfg: "TrainConfig") -> bool:
    """A state.pt from before a setting existed counts as written with that setting's default."""
    return {k: v for k, v in saved.items() if not (k in LATER and v == LATER[k])} == cfg.settings()


# ------------------------------------------------------------------ batches

def epoch_batches(video_of_caption: torch.Tensor, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Caption rows for one epoch: every caption once, no video twice within a batch.

    Captions are shuffled, then dealt into rounds (a video's k-th caption goes to
    round k); each round is cut into near-equal batches of at most batch_size. A
    round of one caption (no negatives) is skipped. Depends only on (seed, epoch).
    """
    g = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    order = torch.randperm(len(video_of_caption), generator=g)
    seen: dict[int, int] = {}
    rounds_l = []
    for v in video_of_caption[order].tolist():
        rounds_l.append(seen.get(v, 0))
        seen[v] = rounds_l[-1] + 1
    rounds = torch.tensor(rounds_l, dtype=torch.long)
    batches = []
    for r in range(int(rounds.max()) + 1 if len(rounds) else 0):
        rows = order[rounds == r]
        batches += list(torch.tensor_split(rows, -(-len(rows) // batch_size)))
    batches = [b for b in batches if len(b) >= 2]
    perm = torch.randperm(len(batches), generator=g)
    return [batches[i] for i in perm.tolist()]


class _Data:
    """The tensors a split needs, on the training device."""

    def __init__(self, fs: FeatureSet, device: torch.device, patches: bool):
        t, v = fs.texts, fs.videos
        self.fs = fs
        self.sentence, self.words, self.word_mask = t.sentence.to(device), t.words.to(device), t.word_mask.to(device)
        self.video = t.video.to(device)
        self.frames, self.mask = v.frames.to(device), v.mask.to(device)
        self.patches = v.patches.to(device) if patches and v.patches is not None else None
        if patches and v.patches is None:
            raise ValueError("a teacher needs patch tokens but these features have none (build them with patches=True)")

    def text_args(self, rows):
        n = int(self.word_mask[rows].sum(1).max())  # trim padding words: the pair cost grows with L
        return self.sentence[rows], self.words[rows, :n], self.word_mask[rows, :n]

    def video_args(self, rows):
        vids = self.video[rows]
        return self.frames[vids], self.mask[vids], None if self.patches is None else self.patches[vids]


# ------------------------------------------------------------------ evaluation

@torch.no_grad()
def evaluate_student(student: Student, fs: FeatureSet) -> tuple[dict, torch.Tensor, torch.Tensor | None]:
    """(retrieval metrics, logits [Nq, Nv], AFA weights [Nv, T] or None) on one split."""
    was = student.training
    student.eval()
    words = (fs.texts.words, fs.texts.word_mask) if student.needs_words else (None, None)
    sim, w = student.similarity(fs.texts.sentence, fs.videos.frames, fs.videos.mask, words=words[0],
                                word_mask=words[1])
    student.train(was)
    return retrieval_metrics(sim, fs.texts.video), sim, w


@torch.no_grad()
def evaluate_teacher(teacher: Teacher, fs: FeatureSet) -> tuple[dict, torch.Tensor]:
    sim = teacher.similarity(fs.texts, fs.videos)
    return retrieval_metrics(sim, fs.texts.video), sim


# ------------------------------------------------------------------ the loop

def _param_groups(model: torch.nn.Module, cfg: TrainConfig):
    """Weight decay on matrices (not on biases, LayerNorms or the logit scale); AFA, the temporal
    module and (fine-tuning) CLIP at their own learning rates."""
    mult = {"afa": cfg.afa_lr_mult, "temporal": cfg.temporal_lr_mult, "query": cfg.query_lr_mult,
            "clip": cfg.backbone_lr_mult}
    groups: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            part = name.split(".")
            part = part[1] if part[0] == "student" else part[0]   # finetune.EndToEnd holds the student
            key = (mult.get(part, 1.0), p.ndim >= 2)
            groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": cfg.lr * m, "weight_decay": cfg.weight_decay if decay else 0.0}
            for (m, decay), ps in sorted(groups.items())]


def warmup_cosine(step: int, total: int, warmup: float) -> float:
    """BertAdam's warmup_cosine, the kit's one lr schedule (students, teachers, the toy CLIP): linear up to
    `warmup` of the steps, then 0.5 (1 + cos(pi x)) of the fraction x of ALL steps done (so the cosine does not
    restart after the warm-up)."""
    x = (step + 1) / max(1, total)
    if x < warmup:
        return x / warmup
    return 0.5 * (1 + math.cos(math.pi * x))


def _fit(model, step_loss, evaluate, cfg: TrainConfig, n_captions_video: torch.Tensor, out_dir, resume,
         progress, desc, save_best, stop_after=None, prepare=None):
    from tqdm.auto import tqdm

    device = resolve_device(cfg.device)
    precision = _precision(cfg, device)
    net = distributed.wrap(model)      # DDP under torchrun; the model itself otherwise
    main = distributed.is_main()
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    steps_per_epoch = len(epoch_batches(n_captions_video, cfg.batch_size, cfg.seed, 0))
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, cfg.warmup))
    history: list[dict] = []
    best = {"key": None, "state": copy.deepcopy(model.state_dict()), "epoch": -1}
    start = 0
    state_path = Path(out_dir) / "state.pt" if out_dir else None
    if state_path and resume and state_path.exists():
        try:
            st = torch.load(state_path, map_location=device, weights_only=False)
            if not _same_config(st["config"], cfg):
                raise ValueError("it was written with another TrainConfig")
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            history, best, start = st["history"], st["best"], st["epoch"] + 1
        except (KeyError, RuntimeError, ValueError) as e:
            raise ValueError(f"{state_path}: cannot resume ({e}); delete it or pass resume=False") from None
    bar = tqdm(total=total, initial=start * steps_per_epoch, desc=desc, disable=not (progress and main), leave=False)
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    if prepare is not None and start < end:   # what only training needs (the teachers' targets)
        prepare()
    for epoch in range(start, end):
        t0 = time.perf_counter()
        torch.manual_seed(int(cfg.seed) * 100_003 + epoch)   # dropout, reproducible per epoch
        model.train()
        sums: dict[str, float] = {}
        batches = epoch_batches(n_captions_video, cfg.batch_size, cfg.seed, epoch)
        for rows in batches:
            with _autocast(device, precision):
                loss, parts = step_loss(net, rows.to(device))
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if cfg.grad_clip:   # per tensor, as BertAdam does (not one global norm)
                for p in model.parameters():
                    if p.grad is not None:
                        torch.nn.utils.clip_grad_norm_(p, cfg.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()}, refresh=False)
        metrics = distributed.broadcast(evaluate(model) if main else None)   # rank 0 evaluates, all agree
        rec = {"epoch": epoch, **{k: v / len(batches) for k, v in sums.items()},
               "val_r1": metrics["t2v_r1"], "val_r5": metrics["t2v_r5"], "val_r10": metrics["t2v_r10"],
               "val_sumr": metrics["sumr"], "val_mnr": metrics["t2v_mnr"], "lr": sched.get_last_lr()[0],
               "seconds": time.perf_counter() - t0}
        # best = highest val R@1; ties go to the higher SumR, then the earlier epoch
        key = (metrics["t2v_r1"], metrics["sumr"])
        rec["best"] = best["key"] is None or key > tuple(best["key"])
        if rec["best"]:
            best = {"key": key, "state": copy.deepcopy(model.state_dict()), "epoch": epoch}
            if out_dir and main:
                save_best(model)
        history.append(rec)
        bar.set_description(f"{desc} ep{epoch} val R@1 {metrics['t2v_r1']:.1f}")
        if state_path and main:
            with atomic_open(state_path) as f:
                torch.save({"config": asdict(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "history": history, "best": best, "epoch": epoch}, f)
            write_atomic(Path(out_dir) / "history.json", json.dumps(history, indent=1))
    bar.close()
    model.load_state_dict(best["state"])
    model.eval()
    return model, history


def _prepare(cfg: TrainConfig, out_dir):
    if not distributed.active():   # under torchrun, distributed.setup shared the cores out
        torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    return resolve_device(cfg.device)


def train_student(cfg: TrainConfig, features_train: FeatureSet, features_val: FeatureSet,
                  teachers: list[Teacher] = (), student: StudentConfig | Student | None = None,
                  out_dir: str | os.PathLike | None = None, resume: bool = True, progress: bool = True,
                  teacher_cache: dict | None = None, desc: str = "student",
                  stop_after: int | None = None, backbone=None):
    """Train a student with InfoNCE and, when teachers are given, coarse/fine teaching.

    Loss: weights[0] * InfoNCE + weights[1] * coarse + weights[2] * fine (losses.teaching_loss);
    a zero weight switches a channel off. `student` is a config (built here, from the seed)
    or a model to continue from; default the TeachCLIP student (seqTransf + AFA) of the features' width. Returns the
    student with its best-validation-R@1 weights and the per-epoch history. A student built here
    starts its temporal module from the backbone's text transformer (features_train.temporal_init). `stop_after`
    runs at most that many epochs in this call (with out_dir, the next call resumes).

    With `cfg.finetune` the student trains on top of a copy of `backbone` (backbone.Backbone) whose last blocks
    train too, from the decoded frames and token ids of features with pixels (finetune.attach_pixels); the
    teachers still score the cached features. Then the returned model is a finetune.EndToEnd (`.student` is the
    student, `.encode(fs)` the features as its CLIP sees them).
    """
    device = _prepare(cfg, out_dir)
    dim, frames = features_train.videos.frames.shape[-1], features_train.videos.frames.shape[1]
    if student is None:
        student = StudentConfig(dim=dim, num_frames=frames, logit_scale=features_train.logit_scale)
    model = build_student(student, features_train.temporal_init) if isinstance(student, StudentConfig) else student
    end_to_end = bool(cfg.finetune)
    if end_to_end:
        from .finetune import EndToEnd

        if backbone is None or features_train.videos.pixels is None or features_val.videos.pixels is None:
            raise ValueError("finetune needs the backbone and features with pixels (finetune.attach_pixels)")
        model = EndToEnd(backbone, model, cfg.finetune, cfg.grad_checkpointing)
    model.to(device)
    teachers = list(teachers)
    for t in teachers:
        t.to(device).eval()
        for p in t.parameters():
            p.requires_grad_(False)
    use_coarse = bool(teachers) and cfg.weights[1] != 0
    use_fine = bool(teachers) and cfg.weights[2] != 0
    the_student = model.student if end_to_end else model
    if use_fine and the_student.afa is None:
        raise ValueError(f"fine-grained teaching needs an AFA student, not {the_student.cfg.kind!r}")
    train = _Data(features_train, device, patches=any(t.needs_patches for t in teachers))
    cache = {} if teacher_cache is None else teacher_cache
    relevance, matrices = [], []   # per teacher: frame relevance of each training caption; logits of every pair

    def teacher_targets():
        """The teachers' outputs on the training set, once, before the first epoch this call trains (a
        finished run that is only loaded never computes them)."""
        for t in teachers:
            if use_fine:
                key = ("relevance", id(t), len(features_train.texts))
                if key not in cache:
                    vids = features_train.texts.video
                    cache[key] = t.frame_relevance(features_train.texts, features_train.videos.subset(vids))
                relevance.append(cache[key].to(device))
            if use_coarse:
                key = ("matrix", id(t), len(features_train.texts), len(features_train.videos))
                if key not in cache:
                    cache[key] = t.similarity(features_train.texts, features_train.videos)
                matrices.append(cache[key].to(device))

    if end_to_end:   # pixels stay on the CPU; a batch's frames travel to the device when it is drawn
        pixels, tokens = features_train.videos.pixels, features_train.texts.tokens

        def inputs(rows):
            batch = pixels[train.video[rows].cpu()]
            if device.type == "cuda":   # from pinned memory the copy overlaps the step before it
                batch = batch.pin_memory()
            return (tokens[rows.cpu()].to(device), batch.to(device, non_blocking=True),
                    train.mask[train.video[rows]])
    else:
        def inputs(rows):
            frames, mask, _ = train.video_args(rows)
            text = train.text_args(rows) if model.needs_words else (train.sentence[rows], None, None)
            return text[0], frames, mask, text[1], text[2]

    recombine = use_coarse and cfg.recombine > 0
    if recombine and (end_to_end or distributed.active()):
        raise ValueError("recombine is a single-process study on cached features: not with finetune or torchrun")

    def step_loss(net, rows):
        if recombine:
            return recombined_loss(net, rows)
        local, counts = distributed.shard(rows)      # this rank's share of the global batch (all of it alone)
        t, v, scores = (distributed.gather(x, counts) for x in net(*inputs(local)))
        logits = model.logit_scale * t @ v.t()
        mask = train.mask[train.video[rows]]
        t_logits = [m[rows][:, train.video[rows]] for m in matrices] if use_coarse else []
        t_rel = [r[rows] for r in relevance] if use_fine else []
        return teaching_loss(logits.float(), None if scores is None else scores.float(), mask, t_logits, t_rel,
                             cfg.weights, cfg.coarse_loss, cfg.fine_loss)

    def recombined_loss(net, rows):
        """The batch's captioned pairs as above, plus k spliced clips as extra columns of the coarse loss."""
        frames, mask, patches = train.video_args(rows)
        k = max(1, round(cfg.recombine * len(rows)))
        cut = splice_cut(cfg.recombine_cut, frames.shape[1])
        spliced = [splice(x, k, cut) for x in (frames, mask)]
        text = train.text_args(rows)
        with torch.no_grad():
            extra = [te.logits(*text, *spliced, None if patches is None else splice(patches, k, cut))
                     for te in teachers]
        q = text[0], torch.cat([frames, spliced[0]]), torch.cat([mask, spliced[1]]), *text[1:]
        t, v, scores = net(*q) if model.needs_words else net(q[0], q[1], q[2], None, None)
        logits = model.logit_scale * t @ v.t()                                        # [B, B + k]
        t_logits = [torch.cat([m[rows][:, train.video[rows]], e.float()], 1) for m, e in zip(matrices, extra)]
        t_rel = [r[rows] for r in relevance] if use_fine else []
        return teaching_loss(logits.float(), None if scores is None else scores[:len(rows)].float(), mask,
                             t_logits, t_rel, cfg.weights, cfg.coarse_loss, cfg.fine_loss)

    val = features_val
    if end_to_end:
        evaluate = lambda m: evaluate_student(m.student, m.encode(val))[0]  # noqa: E731
    else:
        evaluate = lambda m: evaluate_student(m, val)[0]  # noqa: E731
    return _fit(model, step_loss, evaluate, cfg, features_train.texts.video,
                out_dir, resume, progress, desc, lambda m: m.save(Path(out_dir) / "best.pt"), stop_after,
                prepare=teacher_targets)


def splice_cut(share: float, frames: int) -> int:
    """Where recombine cuts: `share` of the frames (at least 1, at most frames - 1), or, for share 0, a cut drawn
    from torch's generator (seeded per epoch by the trainer, so a run is reproducible)."""
    if share > 0:
        return min(frames - 1, max(1, round(share * frames)))
    return int(torch.randint(1, frames, ()).item())


def splice(x: torch.Tensor, k: int, cut: int) -> torch.Tensor:
    """k clips of the batch x [B, T, ...]: clip i's frames before `cut`, then clip i + 1's from `cut` on."""
    return torch.cat([x[:k, :cut], x.roll(-1, 0)[:k, cut:]], 1)


def train_teacher(cfg: TrainConfig, features_train: FeatureSet, features_val: FeatureSet,
                  teacher: str | Teacher = "xclip", out_dir: str | os.PathLike | None = None, resume: bool = True,
                  progress: bool = True, desc: str | None = None, stop_after: int | None = None,
                  **build_kw) -> tuple[Teacher, list[dict]]:
    """Train one teacher with symmetric InfoNCE on its pair logits (cfg.weights are not used). A teacher
    built here by name starts its temporal modules from the backbone's text transformer, as the student does."""
    device = _prepare(cfg, out_dir)
    if isinstance(teacher, str):
        dim, frames = features_train.videos.frames.shape[-1], features_train.videos.frames.shape[1]
        build_kw.setdefault("logit_scale", features_train.logit_scale)
        build_kw.setdefault("query", "words")   # the student's query side (query.py)
        init = features_train.temporal_init
        if init is not None and teacher in ("xclip", "ts2net"):   # their seqTransf starts from the text blocks
            build_kw.setdefault("heads", init["heads"])
            build_kw.setdefault("act", init["act"])
        teacher = build_teacher(teacher, dim, frames, **build_kw)
        if init is not None:
            teacher.load_text_init(init)
    teacher.to(device)
    train = _Data(features_train, device, patches=teacher.needs_patches)

    def step_loss(net, rows):
        # under torchrun each rank scores its share of the captions against every video of the batch
        local, counts = distributed.shard(rows)
        logits = distributed.gather(net(*train.text_args(local), *train.video_args(rows)), counts)
        loss = info_nce(logits.float())
        v = loss.item()
        return loss, {"nce": v, "loss": v}

    val = features_val
    return _fit(teacher, step_loss, lambda m: evaluate_teacher(m, val)[0], cfg, features_train.texts.video,
                out_dir, resume, progress, desc or f"teacher {teacher.name}",
                lambda m: save_teacher(m, Path(out_dir) / "best.pt", **build_kw), stop_after)

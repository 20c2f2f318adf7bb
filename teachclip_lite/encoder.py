"""What turns a decoded clip and a query text into comparable unit vectors for the index: the frozen
backbone with CLIP4Clip mean pooling, or a trained student; and the spec an index records, so that a re-run
or a search uses the very same encoder."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import PROG, UserError

SAME_VECTORS = ("backbone", "frames", "size", "pooling", "model_sha")   # what makes two encoders agree (not paths)


@dataclass
class Encoder:
    """Turns decoded clips and query texts into comparable unit vectors."""

    backbone: object                # backbone.Backbone
    student: object | None          # student.Student, or None for CLIP4Clip mean pooling
    frames: int
    spec: dict = field(default_factory=dict)   # recorded in the index; a re-run must match it

    def video_vector(self, frames, mask) -> np.ndarray:
        """uint8 frames [T,3,S,S] + bool mask [T] -> float32 [D], L2-normalised."""
        import torch
        import torch.nn.functional as F

        from .heads import mean_pool

        mask = torch.as_tensor(mask, dtype=torch.bool)
        frames = torch.as_tensor(frames)
        emb = torch.zeros(len(mask), self.backbone.embed_dim)
        emb[mask] = self.backbone.encode_frames(frames[mask])[0]   # padded slots stay zero, as in features.py
        with torch.inference_mode():
            if self.student is not None:
                v = self.student.encode_video(emb[None], mask[None])[0][0]
            else:
                v = mean_pool(F.normalize(emb, dim=-1)[None], mask[None])[0]
        return v.float().numpy()

    def text_vectors(self, texts: list[str]):
        """Queries -> float32 [Q, D], L2-normalised (the student's text head when there is one)."""
        import torch
        import torch.nn.functional as F

        sentence, words, word_mask = self.backbone.encode_text(list(texts))
        with torch.inference_mode():
            if self.student is not None:
                return self.student.encode_text(sentence, words, word_mask).float()
            return F.normalize(sentence.float(), dim=-1)

    def describe(self) -> str:
        return describe_spec(self.spec)


def describe_spec(spec: dict) -> str:
    how = f"student {spec.get('model')} ({spec.get('student_kind')})" if spec.get("pooling") == "student" \
        else "mean pooling"
    return f"backbone {spec.get('backbone')}, {spec.get('frames')} frames, {how}, {spec.get('precision', 'fp32')}"


def same_encoder(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in SAME_VECTORS)


def spec_sha(spec: dict) -> str:
    """A short key of what makes two encoders give the same vectors."""
    return hashlib.sha1(json.dumps({k: spec.get(k) for k in SAME_VECTORS}, sort_keys=True).encode()).hexdigest()[:16]


def read_model(path: str | os.PathLike):
    """A student checkpoint and the backbone it was trained on: (Student, {"name", "pretrained", "key"}).

    `train` stores the backbone in the checkpoint; for bare student checkpoints (e.g. those
    `experiments.run_experiments` writes) a backbone.json in its folder or up to three above counts.
    """
    import torch

    from .student import Student

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model checkpoint not found (train one with `{PROG} train --config CONFIG.yaml`)")
    try:
        student = Student.load(path)
    except ValueError as e:
        raise UserError(f"{e}; pass a checkpoint written by `{PROG} train` (OUT/model.pt)") from None
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True).get("teachclip_lite") or {}
    except Exception:
        meta = {}
    backbone = meta.get("backbone")
    if backbone is None:
        for folder in [path.parent, *list(path.parents)[1:4]]:
            if (folder / "backbone.json").is_file():
                backbone = json.loads((folder / "backbone.json").read_text(encoding="utf-8"))
                break
    if not backbone or "name" not in backbone:
        raise UserError(f"{path}: the checkpoint does not say which backbone it was trained on; use one written "
                       f"by `{PROG} train`, or put a backbone.json ({{\"name\": \"toy\", \"pretrained\": null}}) "
                       "next to it")
    return student, backbone


def use_tuned(backbone, model: str | os.PathLike, sha: str) -> bool:
    """A student fine-tuned end to end (finetune.py) brings its own CLIP blocks: load them into `backbone`."""
    from .finetune import apply_tuned

    try:
        return apply_tuned(backbone, model, sha[:12])
    except ValueError as e:
        raise UserError(str(e)) from None


def load_encoder(toy: bool = False, backbone: str | None = None, pretrained: str | None = None,
                 model: str | os.PathLike | None = None, frames: int | None = None,
                 precision: str = "fp32") -> Encoder:
    """The encoder the `index` flags describe (defaults: ViT-B-32 with the `openai` weights, 12 frames, fp32;
    `precision` "bf16" or "auto" computes the backbone in bf16, precision.py). A student trained on fp32
    features may be served in bf16."""
    from .backbone import BackboneConfig, file_digest, load_backbone, resolve_weights

    student, model_sha, kind = None, None, None
    if model is not None:
        student, meta = read_model(model)
        student.eval()
        cfg = BackboneConfig(meta["name"], meta.get("pretrained"), precision=precision)
        model_sha = file_digest(Path(model), 16)
        kind = student.cfg.kind
        frames = frames or student.cfg.num_frames
        if student.cfg.uses_temporal and frames > student.cfg.num_frames:
            raise UserError(f"{model}: this student was trained with {student.cfg.num_frames} frames and has a "
                           f"temporal module; use --frames {student.cfg.num_frames} or fewer")
        key = resolve_weights(cfg)[2]
        if meta.get("key") and meta["key"].split("@")[0] != key:   # the weights, whatever the number format
            raise UserError(f"{model}: trained on backbone {meta['key']}, but that backbone now loads as {key} "
                           "(its weights changed); retrain, or restore the original backbone weights")
    elif toy:
        cfg = BackboneConfig("toy", precision=precision)
    else:
        cfg = BackboneConfig(backbone or "ViT-B-32", pretrained, precision=precision)
    frames = 12 if frames is None else int(frames)
    if frames < 1:
        raise UserError(f"--frames must be at least 1 (got {frames})")
    bb = load_backbone(cfg)
    if model is not None:
        use_tuned(bb, model, model_sha)
    if student is not None and student.cfg.dim != bb.embed_dim:
        raise UserError(f"{model}: the student works on {student.cfg.dim}-d features, the backbone gives "
                       f"{bb.embed_dim}-d; the checkpoint's backbone record is wrong")
    pre = cfg.pretrained
    if pre and Path(pre).expanduser().is_file():
        pre = str(Path(pre).expanduser().resolve())
    spec = {"backbone": bb.key, "backbone_name": cfg.name, "pretrained": pre, "frames": int(frames),
            "size": int(bb.image_size), "pooling": "student" if student is not None else "meanP",
            "model": str(Path(model).resolve()) if model is not None else None, "model_sha": model_sha,
            "student_kind": kind, "precision": bb.precision}
    return Encoder(bb, student, int(frames), spec)


def encoder_from_spec(spec: dict, precision: str | None = None) -> Encoder:
    """Rebuild the encoder an index was built with (for `search`), checking nothing changed under it; a query
    is encoded in the index's precision (another `precision` is refused: scores would not be comparable)."""
    from .precision import resolve
    from .backbone import BackboneConfig, file_digest, load_backbone

    student = None
    if spec.get("pooling") == "student":
        path = Path(spec.get("model") or "")
        if not path.is_file():
            raise UserError(f"{path}: the model this index was built with is gone; put it back, or re-index")
        if file_digest(path, 16) != spec.get("model_sha"):
            raise UserError(f"{path}: the model changed since this index was built; re-index with it")
        student, _ = read_model(path)
        student.eval()
    built = spec.get("precision", "fp32")
    if precision is not None and resolve(precision) != built:
        raise UserError(f"this index was built in {built}; search it in {built} (leave out --precision), or "
                        f"re-index with --precision {precision} into a new --out")
    bb = load_backbone(BackboneConfig(spec["backbone_name"], spec.get("pretrained"), precision=built))
    if student is not None:
        use_tuned(bb, path, spec["model_sha"])
    if bb.key != spec["backbone"]:
        raise UserError(f"the index was built with backbone {spec['backbone']}, but it now loads as {bb.key} "
                       "(its weights changed); re-index")
    return Encoder(bb, student, spec["frames"], spec)

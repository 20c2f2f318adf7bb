"""End to end: the student on top of a CLIP that trains too, from decoded frames and token ids.

The laptop default trains small heads on cached features (features.py). The paper fine-tunes CLIP with
the rest (CLIP4Clip, TeachCLIP: CLIP at 1e-7, the new modules at 1e-4); `TrainConfig.finetune` switches
that on here: N > 0 trains the last N blocks of each tower (with their final norm and projection), -1
all of CLIP. The student is the same module either way; only where its inputs come from changes: here
CLIP's frame embeddings and text tokens are computed in every step, with gradients, instead of read from
the cache. Teachers stay frozen and keep scoring the cached features, once (train.py).

`attach_pixels` adds what end-to-end training reads to a FeatureSet: the decoded frames (uint8, as the
cache was built from them) and the captions' token ids. A fine-tuned student is saved with the CLIP
blocks it changed (`tuned` in the checkpoint), so `index`, `search` and `eval` encode with them
(`apply_tuned`).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
import torch.nn as nn

from .backbone import Backbone, text_tokens
from .features import FeatureSet, TextFeatures, VideoFeatures, _digest, _load, _save_atomic, _signature
from .paths import atomic_open
from .student import Student


def tune(clip: nn.Module, blocks: int) -> list[str]:
    """Mark what trains: nothing (0), the last `blocks` residual blocks of the image and the text tower with
    what follows them (final LayerNorm, projection), or every weight (-1). CLIP's own logit scale never trains
    (the student has its own). Returns the names of the trainable parameters."""
    for p in clip.parameters():
        p.requires_grad_(False)
    if blocks < 0:
        for name, p in clip.named_parameters():
            p.requires_grad_(name != "logit_scale")
    elif blocks > 0:
        visual, parts = clip.visual, []
        parts += list(visual.transformer.resblocks[-blocks:]) + [visual.ln_post]
        parts += list(clip.transformer.resblocks[-blocks:]) + [clip.ln_final]
        for m in parts:
            m.requires_grad_(True)
        for p in (visual.proj, clip.text_projection):   # a Parameter, a Linear or None
            if p is not None:
                p.requires_grad_(True)
    return [n for n, p in clip.named_parameters() if p.requires_grad]


class EndToEnd(nn.Module):
    """Token ids and uint8 frames in, the student's (query vectors, video vectors, frame scores) out."""

    def __init__(self, backbone: Backbone, student: Student, blocks: int, checkpointing: bool = False):
        super().__init__()
        self.clip = copy.deepcopy(backbone.model).float()   # master weights in fp32; autocast does the rest
        self.student = student
        self.blocks = blocks
        self.backbone_key = backbone.key
        self.tuned = tune(self.clip, blocks)
        if checkpointing:
            self.clip.set_grad_checkpointing(True)
        self.register_buffer("mean", backbone.mean.detach().clone().float().cpu(), persistent=False)
        self.register_buffer("std", backbone.std.detach().clone().float().cpu(), persistent=False)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.student.logit_scale

    @property
    def needs_words(self) -> bool:
        return self.student.needs_words

    def frame_embeddings(self, pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, 3, S, S] -> CLIP's projected frame embeddings [B, T, D]; padded frames stay 0 (as cached)."""
        x = pixels[mask].float().div(255)
        emb = self.clip.encode_image((x - self.mean) / self.std).float()
        out = emb.new_zeros(*mask.shape, emb.shape[-1])
        out[mask] = emb
        return out

    def text(self, tokens: torch.Tensor):
        """token ids [B, context] -> (sentence, words, word mask), cut after the batch's last EOT."""
        n = int(tokens.argmax(-1).max()) + 1
        s, w, m = text_tokens(self.clip, tokens[:, :n])
        return s.float(), w.float(), m

    def forward(self, tokens: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor):
        sentence, words, word_mask = self.text(tokens)
        frames = self.frame_embeddings(pixels, mask)
        return self.student(sentence, frames, mask, words, word_mask)

    @torch.no_grad()
    def encode(self, fs: FeatureSet, batch: int = 64) -> FeatureSet:
        """The FeatureSet as this (partly trained) CLIP sees it: what evaluation and the index read."""
        was = self.training
        self.eval()
        dev = self.mean.device
        frames = torch.cat([self.frame_embeddings(fs.videos.pixels[i:i + batch].to(dev),
                                                  fs.videos.mask[i:i + batch].to(dev)).cpu()
                            for i in range(0, len(fs.videos), batch)])
        sent, words, wmask = [], [], []
        full = fs.texts.tokens.shape[1]
        for i in range(0, len(fs.texts), 4 * batch):
            s, w, m = self.text(fs.texts.tokens[i:i + 4 * batch].to(dev))
            pad = full - w.shape[1]   # the cache's shape: every caption padded to the context length
            sent.append(s.cpu())
            words.append(torch.nn.functional.pad(w, (0, 0, 0, pad)).cpu())
            wmask.append(torch.nn.functional.pad(m, (0, pad)).cpu())
        self.train(was)
        v, t = fs.videos, fs.texts
        videos = VideoFeatures(v.ids, frames, v.mask, v.indices, None, v.pixels)
        texts = TextFeatures(t.captions, t.video, t.split, torch.cat(sent), torch.cat(words), torch.cat(wmask),
                             t.tokens)
        return FeatureSet(videos, texts, fs.logit_scale, f"{fs.key}+finetuned", fs.temporal_init)

    def save(self, path: str | os.PathLike) -> None:
        """The student's checkpoint (Student.load reads it) plus the CLIP weights that were trained."""
        state = self.clip.state_dict()
        blob = {"config": _student_config(self.student), "state_dict": self.student.state_dict(),
                "tuned": {"blocks": self.blocks, "backbone": self.backbone_key,
                          "state_dict": {k: state[k] for k in self.tuned}}}
        with atomic_open(path) as f:
            torch.save(blob, f)


def _student_config(student: Student) -> dict:
    from dataclasses import asdict

    return asdict(student.cfg)


def apply_tuned(backbone: Backbone, path: str | os.PathLike, tag: str) -> bool:
    """Load the CLIP weights a fine-tuned student checkpoint carries into `backbone` (in its number format),
    and rename its key so features and indexes of the tuned CLIP are kept apart. False when there are none."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    tuned = blob.get("tuned")
    if not tuned:
        return False
    if tuned.get("backbone", "").split("@")[0] != backbone.key.split("@")[0]:
        raise ValueError(f"{path}: fine-tuned from backbone {tuned.get('backbone')}, not {backbone.key}")
    state = {k: v.to(backbone.dtype) for k, v in tuned["state_dict"].items()}
    missing = set(state) - set(backbone.model.state_dict())
    if missing:
        raise ValueError(f"{path}: tuned weights {sorted(missing)[:3]} do not fit backbone {backbone.key}")
    backbone.model.load_state_dict(state, strict=False)
    backbone.key = f"{backbone.key}+ft-{tag}"
    return True


# ---------------------------------------------------------------- the decoded frames

def attach_pixels(fs: FeatureSet, root: str | os.PathLike, backbone: Backbone,
                  cache_dir: str | os.PathLike | None = None, progress: bool = True) -> FeatureSet:
    """Give `fs` its decoded frames (sampled as the cache was: the same frames, at the model's size) and its
    captions' token ids, in place; the frames are cached on disk (one file, written atomically) under a name
    derived from the videos' size and mtime."""
    from tqdm.auto import tqdm

    from .video import SamplingConfig, load_video

    root = Path(root)
    T, S = fs.videos.mask.shape[1], backbone.image_size
    fs.texts.tokens = backbone.tokenize(fs.texts.captions)
    sig = _digest([[_signature(root, v) for v in fs.videos.ids], T, S])
    from . import features   # its CACHE_DIR, looked up now (tests point it elsewhere)

    path = Path(cache_dir or features.CACHE_DIR) / "pixels" / f"pixels-{sig}.safetensors"
    if path.exists():
        fs.videos.pixels = _load(path)[0]["pixels"]
        return fs
    sampling = SamplingConfig(T, S)
    out = torch.zeros(len(fs.videos), T, 3, S, S, dtype=torch.uint8)
    for i, vid in enumerate(tqdm(fs.videos.ids, desc="decode frames", unit="video", disable=not progress)):
        clip = load_video(root / vid, sampling)
        if not torch.equal(torch.as_tensor(clip.indices), fs.videos.indices[i]):
            raise ValueError(f"{root / vid}: decodes to other frames than its cached features; rebuild the cache")
        out[i] = torch.as_tensor(clip.frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_atomic({"pixels": out}, path)
    fs.videos.pixels = out
    return fs

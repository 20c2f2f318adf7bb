"""Encode once, train many times: the on-disk feature cache.

Teachers and students never see pixels. They train on what the frozen backbone
made of each video (per-frame embeddings, and patch tokens for the teachers that
need them) and of each caption (sentence embedding, per-token embeddings). This
file holds those tensors and builds, saves and loads them.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .backbone import Backbone, BackboneConfig, load_backbone
from .data import Dataset, load_dataset
from .paths import CACHE_DIR, TOY_DIR, write_atomic
from .student import temporal_init
from .video import SamplingConfig, VideoDecodeError, load_video


@dataclass
class VideoFeatures:
    ids: list[str]                  # video paths relative to the dataset root
    frames: torch.Tensor            # float32 [Nv, T, D] projected frame embeddings (not normalised)
    mask: torch.Tensor              # bool [Nv, T]; False for padded frames of short clips
    indices: torch.Tensor           # int64 [Nv, T] native frame index of each sampled frame (-1 = padding)
    patches: torch.Tensor | None = None  # float16 [Nv, T, P, D] projected patch tokens, or None
    pixels: torch.Tensor | None = None   # uint8 [Nv, T, 3, S, S] the decoded frames, for end-to-end training
                                         # (finetune.attach_pixels), else None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows) -> "VideoFeatures":
        rows = torch.as_tensor(rows, dtype=torch.long)
        pick = lambda x: None if x is None else x[rows]  # noqa: E731
        return VideoFeatures([self.ids[i] for i in rows.tolist()], self.frames[rows], self.mask[rows],
                             self.indices[rows], pick(self.patches), pick(self.pixels))


@dataclass
class TextFeatures:
    captions: list[str]
    video: torch.Tensor             # int64 [Nc] row of the caption's video in the VideoFeatures
    split: list[str]                # "train" / "val" / "test" / "" per caption
    sentence: torch.Tensor          # float32 [Nc, D] projected EOT token (CLIP's sentence feature)
    words: torch.Tensor             # float32 [Nc, L, D] projected token embeddings
    word_mask: torch.Tensor         # bool [Nc, L]; True for real tokens (SOT .. EOT)
    tokens: torch.Tensor | None = None   # int64 [Nc, context] token ids, for end-to-end training, else None

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, rows, video_map: dict[int, int] | None = None) -> "TextFeatures":
        rows = torch.as_tensor(rows, dtype=torch.long)
        video = self.video[rows]
        if video_map is not None:
            video = torch.tensor([video_map[int(v)] for v in video], dtype=torch.long)
        return TextFeatures([self.captions[i] for i in rows.tolist()], video,
                            [self.split[i] for i in rows.tolist()], self.sentence[rows],
                            self.words[rows], self.word_mask[rows], None if self.tokens is None else self.tokens[rows])


@dataclass
class FeatureSet:
    """Videos and captions of one dataset, encoded by one backbone with one sampling."""

    videos: VideoFeatures
    texts: TextFeatures
    logit_scale: float = 100.0      # the backbone's own temperature (exp of its logit_scale)
    key: str = ""                   # backbone + weights + sampling: what the cache is keyed by
    temporal_init: dict | None = None   # the backbone's text blocks a seqTransf student starts from (student.py)

    def split(self, name: str) -> "FeatureSet":
        """Captions of one split and the videos they point to (videos re-indexed from 0)."""
        rows = [i for i, s in enumerate(self.texts.split) if s == name]
        if not rows:
            raise ValueError(f"no captions in split {name!r} (splits: {sorted(set(self.texts.split))})")
        vids = sorted({int(self.texts.video[i]) for i in rows})
        vmap = {v: j for j, v in enumerate(vids)}
        return FeatureSet(self.videos.subset(vids), self.texts.subset(rows, vmap), self.logit_scale, self.key,
                          self.temporal_init)


# ---------------------------------------------------------------- building and caching

SHARD_VIDEOS = 64   # videos per shard: the unit of resumption


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _signature(root: Path, video: str) -> list:
    """What identifies a video file's content cheaply: path, size and modification time."""
    try:
        st = (root / video).stat()
        return [video, st.st_size, st.st_mtime_ns]
    except OSError:
        return [video, -1, 0]


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, meta: dict | None = None) -> None:
    from safetensors.torch import save

    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"json": json.dumps(meta or {})})
    write_atomic(path, blob)


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("json", "{}"))
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def encode_videos(backbone: Backbone, root: Path, videos: list[str], sampling: SamplingConfig,
                  patches: bool, progress=None) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Decode (two threads) and encode a list of videos; unreadable ones come back as errors."""
    T = sampling.num_frames
    frames_out, masks, idxs, patch_out, ok, errors = [], [], [], [], [], []
    with ThreadPoolExecutor(max_workers=2) as pool:
        clips = pool.map(lambda v: _try_load(root / v, sampling), videos)
        for v, clip in zip(videos, clips):
            if progress is not None:
                progress.update(1)
            if isinstance(clip, VideoDecodeError):
                errors.append({"video": v, "reason": clip.reason})
                continue
            emb, tok = backbone.encode_frames(clip.frames, patches=patches)
            m = clip.mask
            emb[~m] = 0
            frames_out.append(emb)
            masks.append(m)
            idxs.append(torch.from_numpy(clip.indices))
            if patches:
                tok[~m] = 0
                patch_out.append(tok.half())
            ok.append(v)
    D = backbone.embed_dim
    out = {"frames": torch.stack(frames_out) if ok else torch.zeros(0, T, D),
           "mask": torch.stack(masks) if ok else torch.zeros(0, T, dtype=torch.bool),
           "indices": torch.stack(idxs) if ok else torch.zeros(0, T, dtype=torch.long)}
    if patches and ok:
        out["patches"] = torch.stack(patch_out)
    return out | {"_ids": ok}, errors


def _try_load(path: Path, sampling: SamplingConfig):
    try:
        return load_video(path, sampling)
    except VideoDecodeError as e:
        return e


def build_features(dataset: Dataset, backbone: Backbone, sampling: SamplingConfig | None = None,
                   patches: bool = False, cache_dir: str | os.PathLike | None = None,
                   progress: bool = True, shard_size: int = SHARD_VIDEOS) -> FeatureSet:
    """Encode every video and caption of a dataset, through a resumable on-disk cache.

    Videos are encoded in shards of `shard_size`, each written atomically under a name
    derived from the backbone's weights, the sampling and the files' size and mtime: a
    changed setting never reuses stale features, and a killed run resumes at the first
    missing shard. Videos that cannot be decoded are left out (with their captions) and
    listed in errors.jsonl.
    """
    from tqdm.auto import tqdm

    sampling = sampling or SamplingConfig(size=backbone.image_size)
    root = Path(dataset.root)
    setting = {"backbone": backbone.key, "sampling": sampling.key(), "patches": patches, "v": 1}
    cdir = Path(cache_dir or CACHE_DIR) / f"{backbone.key.replace('/', '_')}-{_digest(setting)}"
    cdir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        for stale in [*cdir.glob(".*.tmp"), *cdir.glob(".tmp-*")]:  # leftovers of a killed run; redone
            stale.unlink(missing_ok=True)
    distributed.barrier()

    videos = dataset.videos()
    chunks = [videos[s:s + shard_size] for s in range(0, len(videos), shard_size)]
    shard_path = lambda chunk: cdir / f"videos-{_digest([setting, [_signature(root, v) for v in chunk]])}.safetensors"  # noqa: E731

    def encode_shard(chunk, path, bar):
        tensors, errs = encode_videos(backbone, root, chunk, sampling, patches, bar)
        meta = {"ids": tensors.pop("_ids"), "errors": errs}
        _save_atomic(tensors, path, meta)
        return tensors, meta

    if distributed.size() > 1:   # under torchrun each rank encodes its share of the missing shards first
        mine = [c for i, c in enumerate(chunks) if i % distributed.size() == distributed.rank()]
        bar = tqdm(total=sum(map(len, mine)), desc=f"encode videos (rank {distributed.rank()})", unit="video",
                   disable=not progress)
        for chunk in mine:
            if not shard_path(chunk).exists():
                encode_shard(chunk, shard_path(chunk), bar)
            else:
                bar.update(len(chunk))
        bar.close()
        distributed.barrier()
    parts, errors = [], []
    bar = tqdm(total=len(videos), desc="encode videos", unit="video", disable=not progress)
    for chunk in chunks:
        path = shard_path(chunk)
        if path.exists():
            tensors, meta = _load(path)
            bar.update(len(chunk))
        else:
            tensors, meta = encode_shard(chunk, path, bar)
        parts.append((tensors, meta["ids"]))
        errors += meta["errors"]
    bar.close()
    ids = [v for _, vs in parts for v in vs]
    cat = lambda k: torch.cat([t[k] for t, vs in parts if vs])  # noqa: E731
    vf = VideoFeatures(ids, cat("frames").float(), cat("mask").bool(), cat("indices").long(),
                       cat("patches") if patches and ids else None)
    if errors and distributed.is_main():
        _write_jsonl(cdir / "errors.jsonl", errors)

    row = {v: i for i, v in enumerate(ids)}
    caps = [c for c in dataset.captions if c.video in row]
    texts = [c.text for c in caps]
    tpath = cdir / f"texts-{_digest([setting, texts])}.safetensors"
    if not distributed.is_main():   # rank 0 encodes the captions, the others read them
        distributed.barrier()
    if tpath.exists():
        t, _ = _load(tpath)
    else:
        sent, words, wmask = [], [], []
        for i in tqdm(range(0, len(texts), 256), desc="encode captions", disable=not progress):
            a, b, c = backbone.encode_text(texts[i:i + 256])
            sent.append(a), words.append(b), wmask.append(c)
        t = {"sentence": torch.cat(sent), "words": torch.cat(words), "word_mask": torch.cat(wmask)}
        _save_atomic(t, tpath)
    if distributed.is_main():
        distributed.barrier()
    tf = TextFeatures(texts, torch.tensor([row[c.video] for c in caps], dtype=torch.long),
                      [c.split for c in caps], t["sentence"].float(), t["words"].float(), t["word_mask"].bool())
    manifest = {"setting": setting, "videos": len(ids), "captions": len(texts), "errors": len(errors),
                "root": str(root.resolve())}
    if distributed.is_main():
        write_atomic(cdir / "manifest.json", json.dumps(manifest, indent=2))
    return FeatureSet(vf, tf, backbone.logit_scale, f"{backbone.key}|{sampling.key()}",
                      temporal_init(backbone.model))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def toy_features(root: str | os.PathLike = TOY_DIR, patches: bool = True, num_frames: int = 12,
                 cache_dir: str | os.PathLike | None = None, progress: bool = True,
                 precision: str = "fp32") -> FeatureSet:
    """The toy world encoded by the kit's toy CLIP (cached after the first call; another precision is
    another cache entry)."""
    backbone = load_backbone(BackboneConfig("toy", precision=precision))
    dataset = load_dataset(root)
    return build_features(dataset, backbone, SamplingConfig(num_frames, backbone.image_size), patches,
                          cache_dir, progress)
